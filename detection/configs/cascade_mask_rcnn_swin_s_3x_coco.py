# Cascade Mask R-CNN, Swin-S, 3x ms-crop, GIoU, 4conv1fc (release
# `cascade_mask_rcnn_swin_small_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py`).
_base_ = './cascade_mask_rcnn_swin_t_3x_coco.py'

model = dict(backbone=dict(depths=[2, 2, 18, 2], drop_path_rate=0.3))
