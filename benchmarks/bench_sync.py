"""Benchmark the sync stage against a local fake-gcs-server: objects/s, MB/s and client CPU, 1 vs N threads.

Run from the repository root: `.venv/bin/python -m benchmarks.bench_sync`. The server runs on 127.0.0.1 with the
memory backend, so the direct figures are the client's own ceiling (no network latency). A second pass goes
through a proxy (its own process) that delays every request by a simulated round trip, which threads overlap as
they would against the real service. The estimate for the real bucket combines both.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import corpus
from sign_vq.mirror.sync import sync_bucket
from tests.gcs_server import GcsServer

OBJECTS = 200
THREADS = (1, 8)
REPEATS = 3
SIMULATED_RTT_S = 0.02  # delay the proxy adds to every request
FULL_OBJECTS = 560_000
FULL_MB = 508_000.0
ASSUMED_LATENCY_S = 0.05  # real-service first byte per object (an assumption, not measured here)


def _pump(source: socket.socket, target: socket.socket, delay: float) -> None:
    try:
        while data := source.recv(1 << 16):
            if delay:
                time.sleep(delay)  # client -> server: each request waits one simulated round trip
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _proxy(listener: socket.socket, upstream: int, delay: float) -> None:
    """Forward connections to 127.0.0.1:``upstream``, delaying each client->server chunk by ``delay``."""
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", upstream))
        threading.Thread(target=_pump, args=(client, server, delay), daemon=True).start()
        threading.Thread(target=_pump, args=(server, client, 0.0), daemon=True).start()


def _start_proxy(upstream: int, delay: float) -> tuple[multiprocessing.Process, str]:
    """A latency proxy in its own process (its CPU is not counted as the client's); returns it and its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    process = multiprocessing.get_context("fork").Process(target=_proxy, args=(listener, upstream, delay),
                                                          daemon=True)
    process.start()
    listener.close()
    return process, f"http://127.0.0.1:{port}"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(url: str, work: Path, threads: int) -> dict:
    """Full syncs into an empty mirror (median of REPEATS): wall seconds, client CPU seconds, objects and MB."""
    walls, cpus = [], []
    for _ in range(REPEATS):
        shutil.rmtree(work, ignore_errors=True)
        cpu, wall = _cpu(), time.perf_counter()
        summary = sync_bucket(url, work / "mirror", work / "lists", 16, threads=threads)
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu() - cpu)
        assert summary.failed_count == 0 and summary.downloads.downloaded > 0, summary
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus), "objects": summary.downloads.downloaded,
            "mb": summary.downloads.bytes / 1e6}


def _measure(endpoint: str, label: str, work: Path) -> dict[int, tuple[dict, dict]]:
    """Sync the small and the large half with each thread count; print one row per thread count."""
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    print(f"\n{label}")
    print(f"{'threads':>7} {'objects':>7} {'MB':>6} {'wall s':>7} {'obj/s':>7} {'MB/s':>7} "
          f"{'CPU s':>6} {'CPU ms/obj':>10} {'CPU s/MB':>8}")
    results = {}
    for threads in THREADS:
        runs = {prefix: _run(f"gs://bench/{prefix}", work, threads) for prefix in ("small", "large")}
        total = {key: sum(r[key] for r in runs.values()) for key in ("wall", "cpu", "objects", "mb")}
        results[threads] = (total, runs)
        print(f"{threads:>7} {total['objects']:>7} {total['mb']:>6.1f} {total['wall']:>7.2f} "
              f"{total['objects'] / total['wall']:>7.1f} {total['mb'] / total['wall']:>7.1f} "
              f"{total['cpu']:>6.2f} {1000 * total['cpu'] / total['objects']:>10.2f} "
              f"{total['cpu'] / total['mb']:>8.4f}")
    one, many = results[THREADS[0]][0], results[THREADS[-1]][0]
    ratio = (many["objects"] / many["wall"]) / (one["objects"] / one["wall"])
    print(f"ratio {THREADS[-1]} threads / 1 thread: {ratio:.2f}x")
    return results


def _split(small: dict, large: dict, key: str) -> tuple[float, float]:
    """Seconds per object and per MB, from the small-file and the large-file run (two equations, two unknowns)."""
    per_mb = (large[key] - small[key]) / (large["mb"] - small["mb"])
    per_object = max(0.0, (small[key] - per_mb * small["mb"]) / small["objects"])
    return per_object, max(0.0, per_mb)


def main() -> None:
    """Upload ~200 real pose files to a local server, sync them with 1 and 8 threads, print the figures."""
    logging.basicConfig(level=logging.WARNING)
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    data = corpus()
    files = sorted(data.rglob("*.pose"), key=lambda p: p.stat().st_size)
    files = files[:: max(1, len(files) // OBJECTS)][:OBJECTS]  # spread over the size range
    with GcsServer() as server, tempfile.TemporaryDirectory() as tmp:
        bucket = server.client().create_bucket("bench")
        half = len(files) // 2
        for prefix, subset in (("small/", files[:half]), ("large/", files[half:])):
            for path in subset:
                bucket.blob(prefix + path.relative_to(data).as_posix()).upload_from_filename(path)
        print(f"fake-gcs-server (memory backend) on 127.0.0.1, {len(files)} real pose files "
              f"({half} smallest-half, {len(files) - half} largest-half), {os.cpu_count()} CPUs, "
              f"median of {REPEATS} runs")
        direct = _measure(server.url, "direct (no latency: client + server CPU bound)", Path(tmp))
        proxy, url = _start_proxy(server.port, SIMULATED_RTT_S)
        try:
            _measure(url, f"through a proxy adding {1000 * SIMULATED_RTT_S:.0f} ms per request", Path(tmp))
        finally:
            proxy.kill()
            proxy.join()

    n = THREADS[-1]
    small, large = direct[n][1]["small"], direct[n][1]["large"]
    wall_obj, wall_mb = _split(small, large, "wall")
    cpu_obj, cpu_mb = _split(small, large, "cpu")
    print(f"\nmodel ({n} threads, direct): wall {1000 * wall_obj:.2f} ms/object + {wall_mb:.4f} s/MB; "
          f"client CPU {1000 * cpu_obj:.2f} ms/object + {cpu_mb:.4f} s/MB")
    local = wall_obj * FULL_OBJECTS + wall_mb * FULL_MB
    cpu = cpu_obj * FULL_OBJECTS + cpu_mb * FULL_MB
    for threads in (n, 32):
        latency = FULL_OBJECTS * ASSUMED_LATENCY_S / threads
        print(f"estimate {FULL_OBJECTS:,} objects / {FULL_MB / 1000:.0f} GB, {threads} threads: client-bound "
              f"{local / 3600:.1f} h (client CPU {cpu / 3600:.1f} h) vs latency-bound {latency / 3600:.1f} h "
              f"({1000 * ASSUMED_LATENCY_S:.0f} ms/object assumed) -> about {max(local, latency) / 3600:.1f} h, "
              f"if the link carries {FULL_MB / max(local, latency):.0f} MB/s")
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved


if __name__ == "__main__":
    main()
