"""The embedded demo: the whole suite on scikit-learn's bundled digits, on a laptop CPU.

    data.py            digits -> 32x32 PNGs in ImageFolder layout (train/ + val/)
    detection_data.py  digits pasted on 128x128 canvases, COCO boxes and masks
    models.py          the four demo architectures (timm ViT, timm Swin, torchvision ResNet,
                       mmdet Swin Mask R-CNN config) and their registration
    train_cls.py / train_det.py   `make demo-train`: retrain the committed checkpoints
    run.py             `make demo`: FP / RepQ-ViT / RepQ-ViT + QwT through the suite's pipelines
"""
