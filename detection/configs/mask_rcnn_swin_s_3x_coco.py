# Mask R-CNN, Swin-S backbone, 3x multi-scale crop (Swin-Transformer-Object-Detection's
# `mask_rcnn_swin_small_patch4_window7_mstrain_480-800_adamw_3x_coco.py`), mmdet 3.x.
_base_ = './mask_rcnn_swin_t_3x_coco.py'

model = dict(backbone=dict(depths=[2, 2, 18, 2], drop_path_rate=0.3))
