# Mask R-CNN, Swin-T backbone, 3x schedule with multi-scale crop training (AdamW), COCO instances.
# The architecture of Swin-Transformer-Object-Detection's
# `mask_rcnn_swin_tiny_patch4_window7_mstrain_480-800_adamw_3x_coco.py`, written for mmdet 3.x by
# inheriting mmdet's own 3x ms-crop config. Evaluation: 1333x800 keep-ratio resize, pad to 32.
# `data_root` is set from the command line (`--data-root`); the release checkpoint is loaded by
# detection.convert (converted on load), so no ImageNet-pretrained backbone is downloaded.
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        drop_path_rate=0.2,
        convert_weights=False,  # detection.convert handles the official key layout
        init_cfg=None))
