"""bench/profile_gpu.py: a CPU smoke run at 32², its kernel-name categories and its option checks."""
from __future__ import annotations

import json

import pytest

from bench import profile_gpu

MODE3_KEYS = {"a", "b", "c", "d", "e"}
MODE1_KEYS = {"f", "g", "g1", "h"}


def test_cpu_run_times_every_component_and_the_parts_make_up_the_whole(perceptual_vgg, tmp_path):
    # perceptual_vgg skips the test when the LPIPS backbone weights are not fetched (Suite loads them itself).
    path = tmp_path / "profile.json"
    profile_gpu.main(["--device", "cpu", "--resolution", "32", "--channel-base", "512", "--repeats", "3",
                      "--warmup", "1", "--json", str(path)])
    [report] = json.loads(path.read_text())
    components = {(c["item"], c["key"]): c for c in report["components"]}
    assert set(components) == ({(profile_gpu.MODE3, k) for k in MODE3_KEYS}
                               | {(profile_gpu.MODE1, k) for k in MODE1_KEYS})
    for component in components.values():
        assert component["measurement"]["median_ms"] > 0, component["measurement"]["name"]
        assert component["compute_floor_ms"] is None  # no ceilings on a CPU
    assert report["ceilings"] is None and "no CUDA" in report["ceilings_skipped"]
    assert report["profiles"] == {} and "no CUDA" in report["profiles_skipped"]
    assert components[(profile_gpu.MODE1, "g")]["min_bytes"] > 0
    assert 0 < report["roi_pixels"] <= 32 * 32

    # Matrix FLOPs are deterministic: the parts hold exactly the whole item's convolutions and matmuls.
    for item, whole in ((profile_gpu.MODE3, "e"), (profile_gpu.MODE1, "h")):
        parts = [c for c in report["components"] if c["item"] == item and c["role"] == "part"]
        assert sum(c["gflop"] for c in parts) == pytest.approx(components[(item, whole)]["gflop"], rel=0.02)
    # Times on a shared 2-core machine vary too much for a bound on the ratio (the FLOP check above is the exact
    # one); it must still be reported for both items.
    assert set(report["parts_over_whole"]) == {profile_gpu.MODE3, profile_gpu.MODE1}
    assert all(ratio > 0 for ratio in report["parts_over_whole"].values())


def test_kernels_fall_into_categories_by_name():
    names = {
        "sm90_xmma_gemm_f32f32_tf32f32_f32_nt_n_tilesize128x128x32_warpgroupsize1x1x1_execute_kernel__5x_cublas":
            "GEMM/conv",
        "void cudnn::cnn::conv2d_grouped_direct_kernel<false, true, float>(float const*, float*)": "GEMM/conv",
        "void at::native::vectorized_elementwise_kernel<4, at::native::BinaryFunctor<float, float, float, "
        "at::native::binary_internal::MulFunctor<float> >, std::array<char*, 3ul> >(int)": "element-wise",
        "void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)"
        "::{lambda()#3}, std::array<char*, 2ul> >(int)": "copy/cat",
        "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float> > >"
        "(at::native::ReduceOp<float>)": "reduction",
        "void at::native::vectorized_gather_kernel<16, long>(char*, char*, long*, int)":
            "upsample/gather/scatter/index",
        "void at::native::(anonymous namespace)::upsample_nearest2d_out_frame<float>(float const*, float*)":
            "upsample/gather/scatter/index",
        "void at::native::_scatter_gather_elementwise_kernel<128, 8>(int)": "upsample/gather/scatter/index",
        "void at::native::(anonymous namespace)::CatArrayBatchedCopy_contig<int, 2>(int*)": "copy/cat",
        "Memcpy DtoD (Device -> Device)": "copy/cat",
        "void cunn_SoftMaxForward<4, float, float, float>(float*, float const*, int)": "other",
    }
    assert {name: profile_gpu.kernel_category(name) for name in names} == names
    mul = next(name for name, category in names.items() if "MulFunctor" in name)
    assert profile_gpu.short_kernel_name(mul) == "vectorized_elementwise_kernel[MulFunctor]"

    summary = profile_gpu.summarize_kernels([(name, 10.0) for name in names] + [("Memset (Device)", 30.0)],
                                            iterations=2)
    assert summary["kernel_ms_per_iter"] == pytest.approx((10 * len(names) + 30) / 2e3)
    assert sum(c["percent"] for c in summary["categories"].values()) == pytest.approx(100)
    assert summary["top_kernels"][0] == {"name": "Memset", "category": "copy/cat", "calls_per_iter": 0.5,
                                         "ms_per_iter": 0.015, "percent": pytest.approx(100 * 30 / 140)}
    assert len(summary["top_kernels"]) == profile_gpu.TOP_KERNELS


@pytest.mark.parametrize("argv", [["--precision", "float64"], ["--resolution", "48"], ["--steps", "0"],
                                  ["--roi-pixel-chunk", "0"], ["--device", "cpu", "--seg-resolution", "8"],
                                  ["--warmup", "-1"]])
def test_invalid_options_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        profile_gpu.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err
