"""Mode-1 slider latency through the running studio, driven the way the browser's library view drives it.

    .venv/bin/python bench/studio_slider.py --start [--moves 60] [--path socket|job] [--json out.json]
    .venv/bin/python bench/studio_slider.py --url http://127.0.0.1:8000 --username admin --password … [--moves 60]

``--start`` runs ``manage.py studio`` (demo bundle, its own var folder, Redis key prefix and port, on loopback) like
``bin/studio`` and stops it afterwards; ``--url`` measures a studio that is already running. The bench logs in, takes
a demo sample with a latent and a library vector, and moves that vector's slider ``--moves`` times as
``frontend/js/views/library.js`` does (``LatestOnly``: one request in flight, the next position sent when the answer
is there). ``--path socket`` (the default, what the library view does): every position on one open live-apply
socket, ``/ws/apply/<sample>/``, until its ``apply.image`` (a JPEG data URL) comes back. ``--path job``: the stored
path, ``POST /api/edits`` (mode 1, the image alone as a JPEG unless ``--with-mask``), the edit's websocket
``/ws/edits/<id>/`` until ``edit.result`` brings the image (a JPEG inline, else its URL to fetch; when the job ended
before the socket joined, ``GET /api/edits/<id>`` first). Latency is from sending the position to the image in hand;
the report gives p50/p95/max and where the time went (the worker's render, or the job's queue wait and run).
``--burst N`` also sends N-1 older positions at once per move (several tabs, or a client without LatestOnly): they
must come back superseded. ``--retrain`` then times the admin page's default segmentation retraining from its
request to its end, through the studio's training worker. ``--edit STEPS`` times a mode-3 edit as the edit view
sends it (the sample's eye whites painted larger, ``STEPS`` steps): from the request to the first ``edit.preview``
on its websocket, the previews' cadence, and the result.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import percentile  # noqa: E402
from bench.studio_queues import job_times  # noqa: E402
from webapp.studio import processes  # noqa: E402  (standard library only)

FINISHED = ("succeeded", "failed", "cancelled")


class Studio:
    """HTTP session of one user (cookie + CSRF header), the way the browser talks to the API."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def cookie(self, name: str) -> str:
        return next((c.value for c in self.cookies if c.name == name), "")

    def request(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "X-CSRFToken": self.cookie("csrftoken"), "Referer": self.url}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with self.opener.open(request, timeout=120) as response:
            payload, kind = response.read(), response.headers.get_content_type()
        return json.loads(payload) if payload and kind == "application/json" else payload

    def login(self, username: str, password: str) -> None:
        self.request("GET", "/api/auth/csrf")
        self.request("POST", "/api/auth/login", {"username": username, "password": password})

    def socket_headers(self) -> dict:
        return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in self.cookies)}


async def one_move(studio: Studio, sample_id: int, vector_id: int, scale: float, with_mask: bool = False) -> dict:
    """One slider position: POST (the image alone as a JPEG, as the library view asks, unless ``with_mask``), then
    the edit's websocket until its image is there. ``{latency_s, status, …}``"""
    start = time.perf_counter()
    session = studio.request("POST", "/api/edits", {"sample_id": sample_id, "mode": 1, "with_mask": with_mask,
                                                    "image_format": "png" if with_mask else "jpeg",
                                                    "vectors": [{"vector_id": vector_id, "scale": scale}]})
    posted = time.perf_counter() - start
    ws_url = studio.url.replace("http", "ws", 1) + f"/ws/edits/{session['id']}/"
    status, image_url, inline, result_at = None, None, None, None
    async with websockets.connect(ws_url, additional_headers=studio.socket_headers(), origin=studio.url) as socket:
        while status not in FINISHED:
            message = json.loads(await asyncio.wait_for(socket.recv(), 300))
            if message["type"] == "edit.result":
                image_url, inline, result_at = message["image_url"], message.get("image"), time.perf_counter() - start
            elif message["type"] == "edit.state" and message.get("job_status") in FINISHED:
                status = message["job_status"]
            elif message["type"] == "job.status" and message["status"] in FINISHED:
                status = message["status"]
            if image_url is not None and status is None:
                status = "succeeded"  # the image is what the user waits for; the job's own end follows
    if status == "succeeded" and image_url is None:  # ended before the socket joined: as the browser does
        image_url = studio.request("GET", f"/api/edits/{session['id']}")["result"]["image_url"]
    if status == "succeeded" and inline is None:
        studio.request("GET", image_url)  # the library view's <img> loads it (a JPEG came inline: nothing to load)
    latency = time.perf_counter() - start
    # Where the time went (asked after the move, outside its latency): the job's queue wait and run.
    queue_wait, run = job_times(studio.request("GET", f"/api/jobs/{session['job_id']}"))
    return {"latency_s": latency, "status": status, "session": session["id"], "job": session["job_id"],
            "posted_s": posted, "result_message_s": result_at, "job_queue_wait_s": queue_wait, "job_run_s": run}


def slider_scale(index: int) -> float:
    return round(-2 + 4 * (index % 21) / 20, 2)  # back and forth across the vector's range


async def drive_socket(studio: Studio, sample_id: int, vector_id: int, moves: int, burst: int) -> list[dict]:
    """The library view's sliders: one live-apply socket, each position sent when the previous one's picture is in
    (``burst`` > 1: that many positions at once, the older ones superseded)."""
    url = studio.url.replace("http", "ws", 1) + f"/ws/apply/{sample_id}/"
    rows, seq = [], 0
    async with websockets.connect(url, additional_headers=studio.socket_headers(), origin=studio.url,
                                  max_size=None) as socket:
        for index in range(moves):
            start = time.perf_counter()
            for older in range(burst):
                seq += 1
                await socket.send(json.dumps({"type": "apply", "seq": seq, "vectors": [
                    {"vector_id": vector_id, "scale": slider_scale(index) - 0.01 * (burst - 1 - older)}]}))
            answers = {}
            while seq not in answers:
                message = json.loads(await asyncio.wait_for(socket.recv(), 300))
                if "seq" in message:
                    answers[message["seq"]] = message
            newest = answers[seq]
            row = {"latency_s": time.perf_counter() - start,
                   "status": "succeeded" if newest["type"] == "apply.image" else newest.get("error", newest["type"]),
                   "worker_s": newest.get("worker_ms", 0) / 1000,
                   "older_answers": [answers[s]["type"] for s in range(seq - burst + 1, seq) if s in answers]}
            rows.append(row)
            print(json.dumps({"move": index, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                for k, v in row.items()}}), flush=True)
    return rows


async def drive(studio: Studio, sample_id: int, vector_id: int, moves: int, burst: int,
                with_mask: bool = False) -> list[dict]:
    """The stored path: a mode-1 edit (session and job row) per position."""
    rows = []
    for index in range(moves):
        scale = slider_scale(index)
        if burst > 1:
            older = [studio.request("POST", "/api/edits", {"sample_id": sample_id, "mode": 1, "vectors": [
                {"vector_id": vector_id, "scale": scale - 0.01 * (k + 1)}]}) for k in range(burst - 1)]
        row = await one_move(studio, sample_id, vector_id, scale, with_mask)
        if burst > 1:
            row["older_statuses"] = [studio.request("GET", f"/api/jobs/{s['job_id']}")["status"] for s in older]
        rows.append(row)
        print(json.dumps({"move": index, **{k: (round(v, 3) if isinstance(v, float) else v)
                                            for k, v in row.items()}}), flush=True)
    return rows


def start_studio(var: Path, password: str) -> tuple[subprocess.Popen, str]:
    port = processes.free_port()
    env = {**os.environ, "STUDIO_VAR_DIR": str(var), "STUDIO_KEY_PREFIX": f"bench{secrets.token_hex(3)}",
           "STUDIO_ADMIN_PASSWORD": password, "DATABASE_URL": f"sqlite:///{var / 'studio.sqlite3'}",
           "STORAGE_BACKEND": "local", "STUDIO_DEVICE": "cpu", "PYTHONPATH": str(ROOT)}
    log = open(var / "studio.log", "w")
    child = subprocess.Popen([sys.executable, "manage.py", "studio", "--port", str(port)], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not processes.port_open("127.0.0.1", port):
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the studio did not start: see {var / 'studio.log'}")
        time.sleep(0.5)
    return child, f"http://127.0.0.1:{port}"


def pick_sample_and_vector(studio: Studio) -> tuple[int, int]:
    dataset = studio.request("GET", "/api/datasets")[0]
    samples = studio.request("GET", f"/api/datasets/{dataset['id']}/samples")
    samples = samples.get("items", samples) if isinstance(samples, dict) else samples
    sample = next(s for s in samples if s.get("has_latent", True))
    vector = studio.request("GET", "/api/vectors")[0]
    return sample["id"], vector["id"]


def retrain(studio: Studio) -> dict:
    """The admin page's *Retrain* with its defaults (300 steps, the worker's pixel sampling, not activated), followed
    as its page follows it: ``{wall_s, status, steps, mean_iou, …}`` from the job as it ended."""
    dataset = studio.request("GET", "/api/datasets")[0]
    start = time.perf_counter()
    job = studio.request("POST", "/api/train/segmentation", {"dataset_id": dataset["id"], "steps": 300,
                                                             "name": "bench retraining", "activate": False})
    while (job := studio.request("GET", f"/api/jobs/{job['id']}"))["status"] not in FINISHED:
        time.sleep(0.5)  # a bench's poll; the page follows the job's websocket
    metrics = job.get("result", {}).get("metrics", {})
    queue_wait, run = job_times(job)
    return {"wall_s": round(time.perf_counter() - start, 1), "status": job["status"], "error": job.get("error"),
            "queue_wait_s": queue_wait, "run_s": run,
            **{k: metrics.get(k) for k in ("steps", "mean_iou", "train_mean_iou", "num_samples", "num_heldout")}}


def predicted_mask(studio: Studio, sample_id: int) -> bytes:
    """The branch's stored prediction for the sample, as the edit view gets it: ``segmentation.png``, or while the
    start-up ranking has not reached the sample, a segment job's."""
    try:
        return studio.request("GET", f"/api/samples/{sample_id}/segmentation.png")
    except urllib.error.HTTPError as missing:
        if missing.code != 404:
            raise
    job = studio.request("POST", f"/api/samples/{sample_id}/segment", {})
    while (job := studio.request("GET", f"/api/jobs/{job['id']}"))["status"] not in FINISHED:
        time.sleep(0.2)
    if job["status"] != "succeeded":
        raise RuntimeError(f"segmenting sample #{sample_id} ended {job['status']}: {job.get('error')}")
    return studio.request("GET", job["result"]["prediction_url"])


def enlarged_eye_whites(studio: Studio, sample_id: int) -> tuple[bytes, list[int]]:
    """The sample's segmentation with its eye-white classes grown by 3 pixels over the skin (the new user's "much
    larger eyes" of issue #21), as the edit view's painted target PNG, and the classes the paint changed (the eye
    whites and the skin)."""
    import io

    import numpy as np
    from PIL import Image

    dataset = studio.request("GET", "/api/datasets")[0]
    names = [c["name"].lower() for c in studio.request("GET", f"/api/schemas/{dataset['schema_id']}")["classes"]]
    whites = [i for i, name in enumerate(names) if "eye" in name and "white" in name]
    skin = [i for i, name in enumerate(names) if name == "skin"]
    if not whites or not skin:
        raise SystemExit(f"--edit paints eye whites over skin; this dataset's schema has neither: {names}")
    image = Image.open(io.BytesIO(predicted_mask(studio, sample_id)))
    mask = np.array(image)
    for white in whites:
        grown = mask == white
        for _ in range(3):
            grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
        mask[grown & np.isin(mask, skin)] = white
    changed = sorted({*whites, *skin})
    painted = Image.fromarray(mask, mode="P")
    painted.putpalette(image.getpalette() or [])
    out = io.BytesIO()
    painted.save(out, format="PNG")
    return out.getvalue(), changed


async def mode3_edit(studio: Studio, sample_id: int, steps: int, roi: str = "changed") -> dict:
    """A mode-3 edit as the edit view starts and follows it: ``{first_preview_s, preview_gap_s, …, total_s}``.
    ``roi`` "changed": the edit view's request (the changed pixels, dilated); "classes": every pixel of the changed
    classes too (the ROI every edit had before issue #21)."""
    import base64

    target, classes = enlarged_eye_whites(studio, sample_id)
    start = time.perf_counter()
    session = studio.request("POST", "/api/edits", {"sample_id": sample_id, "mode": 3, "steps": steps,
                                                    "target_mask_png": base64.b64encode(target).decode(),
                                                    "edited_classes": classes if roi == "classes" else []})
    ws_url = studio.url.replace("http", "ws", 1) + f"/ws/edits/{session['id']}/"
    previews, result_at, status = [], None, None
    async with websockets.connect(ws_url, additional_headers=studio.socket_headers(), origin=studio.url) as socket:
        while status not in FINISHED:
            message = json.loads(await asyncio.wait_for(socket.recv(), 600))
            if message["type"] == "edit.preview":
                previews.append((time.perf_counter() - start, message.get("step"), "mask" in message))
            elif message["type"] == "edit.result":
                result_at = time.perf_counter() - start
            elif message["type"] == "edit.state" and message.get("job_status") in FINISHED:
                status = message["job_status"]
            elif message["type"] == "job.status" and message["status"] in FINISHED:
                status = message["status"]
    gaps = [b[0] - a[0] for a, b in zip(previews, previews[1:])]
    queue_wait, run = job_times(studio.request("GET", f"/api/jobs/{session['job_id']}"))
    return {"steps": steps, "roi": roi, "changed_classes": classes, "status": status,
            "first_preview_s": previews[0][0] if previews else None,
            "first_preview_step": previews[0][1] if previews else None, "previews": len(previews),
            "previews_with_mask": sum(p[2] for p in previews),
            "preview_gap_s": {"p50": statistics.median(gaps), "max": max(gaps)} if gaps else None,
            "result_s": result_at, "total_s": time.perf_counter() - start,
            "job_queue_wait_s": queue_wait, "job_run_s": run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running studio (else --start)")
    parser.add_argument("--start", action="store_true", help="start `manage.py studio` for the bench, then stop it")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default=os.environ.get("STUDIO_ADMIN_PASSWORD", ""))
    parser.add_argument("--moves", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3, help="moves before the timed ones (models load)")
    parser.add_argument("--burst", type=int, default=1, help="positions sent at once per move (coalescing)")
    parser.add_argument("--path", choices=("socket", "job"), default="socket",
                        help="socket: the live-apply socket the library view uses; job: a mode-1 edit per position")
    parser.add_argument("--with-mask", action="store_true",
                        help="--path job: ask for each move's segmentation too (the library view asks for the image "
                             "alone)")
    parser.add_argument("--retrain", action="store_true",
                        help="also time the admin page's default segmentation retraining, from its request to its end")
    parser.add_argument("--edit", type=int, default=0, metavar="STEPS",
                        help="also time a mode-3 edit of STEPS steps as the edit view runs it (0: none)")
    parser.add_argument("--edit-roi", nargs="+", choices=("changed", "classes"), default=["changed"],
                        help="--edit's regions of interest, one edit each: changed (the edit view's), classes (every "
                             "pixel of the changed classes, as before issue #21)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    for name in ("moves", "warmup", "burst", "edit"):
        if getattr(args, name) < (1 if name in ("moves", "burst") else 0):
            parser.error(f"--{name} must be ≥ {1 if name in ('moves', 'burst') else 0}")
    if args.with_mask and args.path == "socket":
        parser.error("--with-mask is for --path job: the live-apply socket sends the image alone")
    child = None
    with tempfile.TemporaryDirectory(prefix="bench-studio-") as tmp:
        try:
            if args.start:
                args.password = args.password or secrets.token_urlsafe(12)
                child, args.url = start_studio(Path(tmp), args.password)
            studio = Studio(args.url)
            studio.login(args.username, args.password)
            sample_id, vector_id = pick_sample_and_vector(studio)
            if args.path == "socket":
                def moving(moves, burst):
                    return drive_socket(studio, sample_id, vector_id, moves, burst)
            else:
                def moving(moves, burst):
                    return drive(studio, sample_id, vector_id, moves, burst, args.with_mask)
            asyncio.run(moving(args.warmup, 1))
            started = time.strftime("%Y-%m-%d %H:%M:%S"), os.getloadavg()
            rows = asyncio.run(moving(args.moves, args.burst))
            edits = [asyncio.run(mode3_edit(studio, sample_id, args.edit, roi)) for roi in args.edit_roi
                     ] if args.edit else None
            retraining = retrain(studio) if args.retrain else None
        finally:
            if child is not None:
                child.terminate()
                child.wait(60)
    latencies = [r["latency_s"] for r in rows if r["status"] == "succeeded"]
    parts = ("worker_s",) if args.path == "socket" else ("posted_s", "job_queue_wait_s", "job_run_s",
                                                         "result_message_s")
    summary = {"date": started[0], "load_average_at_start": started[1], "load_average_at_end": os.getloadavg(),
               "path": args.path, "moves": len(rows), "succeeded": len(latencies), "burst": args.burst,
               "with_mask": args.with_mask, "p50_s": statistics.median(latencies),
               "p95_s": percentile(latencies, 0.95), "max_s": max(latencies),
               "p50_parts_s": {part: statistics.median(r[part] for r in rows if r[part] is not None)
                               for part in parts}}
    if retraining is not None:
        summary["retraining"] = retraining
    if edits is not None:
        summary["mode3_edits"] = edits
    if args.burst > 1:
        older = [answer for r in rows for answer in r.get("older_statuses", r.get("older_answers", []))]
        summary["older_superseded"] = sum(answer in ("cancelled", "apply.superseded") for answer in older)
        summary["older_sent"] = (args.burst - 1) * len(rows)
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "moves": rows}, indent=2))


if __name__ == "__main__":
    main()
