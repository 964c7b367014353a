"""Concurrent mode-1 users served by one worker: request → result latency, batched and one at a time.

    python bench/mode1_concurrency.py --users 8 --seconds 15 --json $OUT/mode1_concurrency.json

Each simulated user drags a slider: it sends a request (its own W+ latent, one library vector, the slider value),
waits until the edited image and mask are on the host, then sends the next one after ``--think-ms``. One server
thread plays the GPU worker's engine side: it takes every request that is waiting (up to ``--max-batch``), renders
them in one ``apply_vectors`` pass (``scales`` one row per request, as ``gpu_worker.tasks.apply`` does), copies the
8-bit image and the mask to the host and answers. The latency is measured from the request's creation to its
answer, so queueing behind other users' passes is included; the web hop (Celery, Redis, PNG encoding, websocket) is
not. Config-f networks with random weights, 34 classes, 10-member ensemble, as ``bench/gpu.py``.
"""
from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import percentile  # noqa: E402
from bench.suite import Suite, SuiteConfig, environment  # noqa: E402
from editor_core.editing import apply_vectors  # noqa: E402


@dataclass
class Mode1Request:
    user: int
    scale: float
    created: float = field(default_factory=time.perf_counter)
    answered: threading.Event = field(default_factory=threading.Event)
    latency_s: float = 0.0
    batch_size: int = 0


def serve(suite: Suite, latents: torch.Tensor, requests: "queue.Queue[Mode1Request]", max_batch: int,
          stop: threading.Event) -> None:
    """The worker loop: drain what is waiting, one forward pass for all of it, results to the host."""
    while not stop.is_set():
        try:
            batch = [requests.get(timeout=0.05)]
        except queue.Empty:
            continue
        while len(batch) < max_batch:
            try:
                batch.append(requests.get_nowait())
            except queue.Empty:
                break
        ws = latents[[request.user for request in batch]]
        scales = torch.tensor([[request.scale] for request in batch], device=latents.device)
        applied = apply_vectors(suite.models, ws, suite.vectors[:1], scales)
        ((applied.image.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).cpu()  # on the host, as an answer needs them
        applied.mask.to(torch.uint8).cpu()
        answered = time.perf_counter()
        for request in batch:
            request.latency_s, request.batch_size = answered - request.created, len(batch)
            request.answered.set()


def drag_slider(user: int, requests: "queue.Queue[Mode1Request]", think_s: float, until: float,
                done: list[Mode1Request], lock: threading.Lock) -> None:
    step = 0
    while time.perf_counter() < until:
        request = Mode1Request(user, scale=-2.0 + (step % 41) * 0.1)
        requests.put(request)
        request.answered.wait()
        with lock:
            done.append(request)
        step += 1
        time.sleep(think_s)


def session(suite: Suite, users: int, max_batch: int, seconds: float, think_s: float, warmup_s: float) -> dict:
    device = suite.device
    with torch.no_grad():
        latents = suite.generator.mapping(torch.randn(users, suite.config.w_dim, device=device), truncation_psi=0.7)
    requests: "queue.Queue[Mode1Request]" = queue.Queue()
    stop, lock, done = threading.Event(), threading.Lock(), []
    server = threading.Thread(target=serve, args=(suite, latents, requests, max_batch, stop), daemon=True)
    server.start()
    start = time.perf_counter()
    until = start + warmup_s + seconds
    clients = [threading.Thread(target=drag_slider, args=(user, requests, think_s, until, done, lock))
               for user in range(users)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    stop.set()
    server.join()
    measured = [r for r in done if r.created >= start + warmup_s]
    latencies = sorted(r.latency_s * 1e3 for r in measured)
    if not latencies:
        raise RuntimeError("no request finished after the warm-up: raise --seconds")
    return {"users": users, "max_batch": max_batch, "requests": len(latencies),
            "p50_ms": statistics.median(latencies), "p95_ms": percentile(latencies, 0.95),
            "max_ms": latencies[-1], "mean_batch": statistics.fmean(r.batch_size for r in measured),
            "requests_per_s": len(latencies) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per setting (after warm-up)")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--think-ms", type=float, default=30.0, help="pause between a user's answer and next request")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 16],
                        help="settings to compare (1 = one request per forward pass)")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.users < 1 or args.seconds <= 0 or min(args.max_batch) < 1 or args.think_ms < 0:
        parser.error("--users, --seconds and --max-batch must be positive, --think-ms ≥ 0")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = SuiteConfig(resolution=args.resolution, seg_resolution=min(args.resolution, 512),
                         precision=args.precision)
    suite = Suite(config, device)
    print(environment(device), f"{args.resolution}², {args.precision}, {args.users} users, think {args.think_ms} ms")
    print(f"{'max batch':>9s} {'requests':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s} {'mean batch':>10s} "
          f"{'req/s':>7s}")
    rows = []
    for max_batch in args.max_batch:
        row = session(suite, args.users, max_batch, args.seconds, args.think_ms / 1e3, args.warmup_seconds)
        rows.append(row)
        print(f"{row['max_batch']:9d} {row['requests']:9d} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} "
              f"{row['max_ms']:8.1f} {row['mean_batch']:10.2f} {row['requests_per_s']:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": environment(device), "args": vars(args),
                                               "results": rows}, indent=2))


if __name__ == "__main__":
    main()
