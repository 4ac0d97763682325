# Demo detector: Mask R-CNN with an mmdet SwinTransformer backbone, scaled down for the 128x128
# digits-on-canvas COCO set of benchmarks/demo/detection_data.py (10 classes '0'..'9').
# Same classes as the paper-scale mask_rcnn_swin_t (SwinTransformer -> FPN -> RPN -> StandardRoIHead
# with Shared2FCBBoxHead and FCNMaskHead); only widths, depths, anchor sizes and sampling budgets
# are smaller. Trained from scratch by benchmarks/demo/train_det.py (`make demo-train`).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

classes = tuple(str(i) for i in range(10))
metainfo = dict(classes=classes)
data_root = 'data/demo/digits-coco/'  # overridden by --data-dir (python -m detection)
img_scale = (128, 128)

model = dict(
    data_preprocessor=dict(mean=[32.7, 32.7, 32.7], std=[52.4, 52.4, 52.4], bgr_to_rgb=True,
                           pad_mask=True, pad_size_divisor=32),
    backbone=dict(
        pretrain_img_size=128,
        embed_dims=32,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        window_size=4,
        drop_path_rate=0.0,
        convert_weights=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=48, num_outs=5),
    rpn_head=dict(in_channels=48, feat_channels=48,
                  anchor_generator=dict(scales=[4], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=48),
        bbox_head=dict(in_channels=48, fc_out_channels=128, num_classes=10),
        mask_roi_extractor=dict(out_channels=48),
        mask_head=dict(num_convs=1, in_channels=48, conv_out_channels=48, num_classes=10)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # no flip: digits are not mirror-symmetric
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=True, min_size=4),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json', metric=['bbox', 'segm'])
test_evaluator = val_evaluator

max_epochs = 6
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs, eta_min=1e-5),
]
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.05), clip_grad=dict(max_norm=10.0))
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1),
                     visualization=dict(draw=False))
randomness = dict(seed=0, deterministic=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1),
               dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(enable=False, base_batch_size=16)
