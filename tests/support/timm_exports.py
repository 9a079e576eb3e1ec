"""Exports timm's architectures as a user would and checks each in `microscope`.

Not run in CI (it needs torch and timm, and takes a long while). For each architecture: build it
with seeded random weights (`pretrained=False`: no download) at its default input size, export it
with PyTorch's default exporter (dynamic batch, opset 18) and, where that fails, with the classic
one (`dynamo=False`, opset 17), evaluate a batch of 2 with `microscope eval`, and compare with
PyTorch's logits. One line per architecture: which exporter, the relative error or why it
failed, and the first and last layer names.

Setup (a scratch virtual environment, CPU is enough):

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch torchvision timm onnxscript "onnx==1.23.2" numpy

usage: python timm_exports.py [--classic] MICROSCOPE_BIN OUT_DIR [ARCH...]

With --classic, the classic exporter only.

Measured on 2026-12-05 (torch 2.15, timm 1.0.31): all 176 below load; 175 agree with PyTorch at
a batch of 2 (relative error at most 7.3e-6, resnetv2_50x1_bit's, where onnxruntime's is the
same). efficientnetv2_rw_t differs by 1.1e-2, and onnxruntime by 8.0e-3: its random weights grow
the residual stream about 4× a block (to 26,000), where rounding differs between runtimes; node
by node, no op is wrong. The default exporter fails on 10 (the classic one exports them), and
21 exports fix their batch at 1 in a Reshape (onnxruntime refuses a batch of 2; microscope runs
one image at a time).
"""

import os
import sys

import numpy as np
import timm
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import compare, run_all, torch_export  # noqa: E402

# One or two small members of each family: convolutions of every kind, attention of every kind,
# MLP mixers, and the odd ones (TensorFlow's "same" padding, space-to-depth, an LSTM).
ARCHS = [
    # convolutional
    "resnet18d", "seresnext26d_32x4d", "res2net50_14w_8s", "resnest14d", "skresnet18",
    "ecaresnet26t", "regnety_002", "regnetz_b16", "rexnet_100", "ghostnet_100", "ghostnetv2_100",
    "mobilenetv3_large_100", "mobilenetv4_conv_small", "tf_efficientnet_b0",
    "tf_mobilenetv3_small_100", "efficientnetv2_rw_t", "mixnet_s", "lcnet_050", "hgnetv2_b0",
    "dla34", "dpn68", "cspdarknet53", "hrnet_w18_small", "selecsls42b", "vovnet39a",
    "tresnet_m", "inception_v4", "xception41", "dm_nfnet_f0", "nf_regnet_b0", "repvgg_a0",
    "mobileone_s0", "fastvit_t8", "repvit_m1", "convnext_atto", "convnextv2_atto",
    "inception_next_tiny", "edgenext_xx_small", "starnet_s1", "rdnet_tiny", "mambaout_femto",
    "densenet121", "vgg11_bn", "gernet_s",
    # attention
    "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "eva02_tiny_patch14_224",
    "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_ns_224", "cait_xxs24_224",
    "xcit_nano_12_p16_224", "pit_ti_224", "crossvit_tiny_240", "twins_svt_small", "pvt_v2_b0",
    "levit_128s", "mobilevit_xxs", "mobilevitv2_050", "efficientformer_l1",
    "efficientformerv2_s0", "efficientvit_b0", "efficientvit_m0", "tiny_vit_5m_224",
    "coatnet_nano_rw_224", "maxvit_nano_rw_256", "gcvit_xxtiny", "davit_tiny",
    "focalnet_tiny_srf", "hiera_tiny_224", "botnet26t_256", "halonet26t", "lambda_resnet26t",
    "convit_tiny", "visformer_tiny", "volo_d1_224", "nextvit_small", "beit_base_patch16_224",
    # MLPs and the rest
    "mixer_s16_224", "resmlp_12_224", "gmlp_ti16_224", "poolformer_s12", "sequencer2d_s",
    # more members: DINOv2, CLIP and SigLIP towers, relative positions, anti-aliasing, BiT,
    # NFNets, NAS nets, MobileNetV4/V5 hybrids, MetaFormers, Hiera, timm's test networks
    "vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2",
    "vit_base_patch16_clip_quickgelu_224", "vit_base_patch16_siglip_224",
    "vit_relpos_small_patch16_224", "vit_srelpos_small_patch16_224", "flexivit_small",
    "deit3_small_patch16_224", "vitamin_small_224", "eva02_small_patch14_224",
    "beitv2_base_patch16_224", "vit_medium_patch16_gap_256", "vit_little_patch16_reg4_gap_256",
    "resnetv2_50x1_bit", "resnetv2_50", "resnetblur18", "resnetaa50", "seresnet18",
    "legacy_seresnet18", "inception_v3", "inception_resnet_v2", "ese_vovnet19b_dw", "cs3darknet_s",
    "cspresnext50", "darknet53", "res2next50", "sebotnet33ts_256", "haloregnetz_b",
    "lambda_resnet26rpt_256", "gcresnet33ts", "eca_nfnet_l0", "regnetx_002", "efficientnet_b0",
    "tf_efficientnetv2_b0", "tf_mixnet_s", "mnasnet_small", "spnasnet_100", "semnasnet_050",
    "mobilenetv2_050", "fbnetv3_b", "hardcorenas_a", "tinynet_a", "lcnet_100", "ghostnetv3_100",
    "efficientvit_l1", "fastvit_mci0", "hgnet_tiny", "mobilenetv4_hybrid_medium",
    "mobilenetv5_300m", "vgg11", "wide_resnet50_2", "skresnext50_32x4d", "dpn48b", "nest_tiny",
    "crossvit_9_240", "coat_lite_tiny", "coat_tiny", "twins_pcpvt_small", "xcit_tiny_12_p8_224",
    "pit_xs_distilled_224", "levit_conv_128s", "rexnetr_100", "ghostnet_050", "repghostnet_050",
    "fastvit_sa12", "edgenext_small_rw", "davit_small", "maxxvit_rmlp_nano_rw_256",
    "maxvit_tiny_tf_224", "coatnext_nano_rw_224", "swin_s3_tiny_224", "swinv2_tiny_window8_256",
    "gcvit_xtiny", "focalnet_tiny_lrf", "convformer_s18", "caformer_s18", "poolformerv2_s12",
    "inception_next_atto", "hiera_small_224", "hieradet_small", "starnet_s050", "tiny_vit_11m_224",
    "test_vit", "test_efficientnet", "test_byobnet", "test_convnext", "test_nfnet", "test_resnet",
    "test_vit2", "test_vit3", "shvit_s1", "fasternet_t0", "csatv2", "mambaout_kobe",
]


def check(microscope, out, name):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        # Some heads start at zero: logits of zeros would agree with anything.
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
    exporter = torch_export(model, size, os.path.join(d, "model.onnx"), "image", CLASSIC)
    x = np.random.default_rng(0).random((2, 3, size[0], size[1])).astype("float32")
    np.save(os.path.join(d, "x.npy"), x)
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    want = (want if torch.is_tensor(want) else want[0]).numpy()
    return "%s, %s" % (exporter, compare(microscope, d, want))


CLASSIC = "--classic" in sys.argv


def main():
    run_all("timm_exports.py", ARCHS, check, ("--classic",))


if __name__ == "__main__":
    main()
