"""Scaling benchmark of SSR stage (i) band decomposition (recbole_ssr.model.spectral). Not a test.

Times one band decomposition and its peak memory on synthetic random bipartite user-item graphs (half users,
half items, uniform random interactions, average node degree ``--degree``, i.e. nnz(Â) ≈ degree·N), for the
scalable ``chebyshev`` method and the dense ``eigen`` method. Every (method, size) runs in a fresh subprocess,
so the peak RSS reported is that size's own.

    python benchmarks/spectral_scaling.py                       # the default table (1e4, 1e5, 1e6; eigen 1e3, 5e3)
    python benchmarks/spectral_scaling.py --cheb-nodes 1e5 --eigen-nodes --backward   # one size, with backward
    python benchmarks/spectral_scaling.py --accuracy 2000 --cheb-nodes --eigen-nodes   # chebyshev vs eigen, by K
    python benchmarks/spectral_scaling.py --spmm-sweep --cheb-nodes --eigen-nodes      # one recurrence step vs nnz

Columns: ``build_s`` graph + signal construction (not part of the decomposition); ``call_s`` one decomposition
(forward, ``torch.no_grad``; ``cpu_s`` its process CPU time, all threads), split into ``edges_s`` (chebyshev:
moment pass + edge solve; eigen: the one-time dense eigh) and ``filter_s`` (chebyshev: the K filter products;
eigen: GFT + band reconstruction); ``cached_s`` (eigen only) a second call with the cached eigenbasis;
``bwd_s`` (with ``--backward``) one backward pass of sum(bands * R) w.r.t. X; ``rss_start`` RSS before the call
(graph + X in memory), ``rss_peak`` the sampled peak RSS during the call(s), ``maxrss`` the process high-water
mark (ru_maxrss), all in GiB; ``load avg`` the 1-minute load average (the machine is shared) at start and end.

``--accuracy N`` compares ``chebyshev`` (for each ``--orders`` K) with exact ``eigen`` bands on one graph of N
nodes: max |λ-edge difference|, leakage Σ_m ‖B_cheb,m - B_eig,m‖² / ‖X‖², max |‖band‖²-share difference|,
and the max deviation of the projection shares from 1/M (chebyshev and eigen).

``--spmm-sweep`` times the kernel that dominates ``chebyshev`` (one in-place recurrence step
Y <- -2ÂX - Y, width ``--width``) on graphs of growing nnz; the minimum over ``--repeats`` runs is reported, which
is robust to other jobs on a shared machine, together with ns per (nnz x column).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_gib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30


class PeakSampler:
    """Samples the RSS of this process every ``interval`` seconds in a background thread."""

    def __init__(self, interval=0.01):
        self.interval, self.peak, self._stop = interval, _rss_gib(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_gib())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_gib())


def build_graph(n, degree, seed):
    """Normalised adjacency Â (torch CSR, float32) of a random bipartite graph: n/2 users, n/2 items."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    rng = np.random.default_rng(seed)
    n_users = n // 2
    n_items = n - n_users
    n_edges = int(round(n * degree / 2))
    users = rng.integers(0, n_users, n_edges, dtype=np.int32)
    items = rng.integers(0, n_items, n_edges, dtype=np.int32) + n_users
    rows = np.concatenate([users, items])
    cols = np.concatenate([items, users])
    del users, items
    adj = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n))
    del rows, cols
    adj.data[:] = 1.0  # duplicates summed by csr construction -> binary
    deg = np.asarray(adj.sum(1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    adj = sp.diags(inv) @ adj @ sp.diags(inv)
    adj = adj.tocsr().astype(np.float32)
    adj.sort_indices()
    return torch.sparse_csr_tensor(torch.from_numpy(adj.indptr.astype(np.int64)),
                                   torch.from_numpy(adj.indices.astype(np.int64)),
                                   torch.from_numpy(adj.data), size=(n, n))


def worker(args):
    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
    sys.path.insert(0, ROOT)
    from recbole_ssr.model.spectral import SpectralBandDecomposer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    adj = build_graph(args.nodes, args.degree, args.seed)
    # a smooth, LightGCN-like signal: H + ÂH + Â²H (energy concentrated at low λ, as in training)
    h = torch.randn(args.nodes, args.width)
    x = h + torch.sparse.mm(adj, h)
    x += torch.sparse.mm(adj, x - h)
    del h
    build_s = time.perf_counter() - t0
    dec = SpectralBandDecomposer(adj, num_bands=args.bands, method=args.method, cheb_order=args.cheb_order,
                                 eigen_max_nodes=max(args.nodes, 5000), col_chunk=args.col_chunk)
    row = {"method": args.method, "nodes": args.nodes, "nnz": int(adj._nnz()), "width": args.width,
           "bands": args.bands, "cheb_order": args.cheb_order if args.method == "chebyshev" else None,
           "threads": torch.get_num_threads(), "build_s": build_s, "rss_start": _rss_gib()}
    with PeakSampler() as peak:
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            bands = dec(x)
        row["call_s"] = time.perf_counter() - t0
        row["cpu_s"] = time.process_time() - c0
        timings = dict(dec.timings)
        row["edges_s"] = timings.get("edges_s", timings.get("eigh_s"))
        row["filter_s"] = timings.get("filter_s", timings.get("bands_s"))
        if args.method == "eigen":
            t0 = time.perf_counter()
            with torch.no_grad():
                bands = dec(x)
            row["cached_s"] = time.perf_counter() - t0
    row["rss_peak"] = peak.peak
    row["sum_err"] = float((bands.sum(0) - x).abs().max())
    row["shares"] = [round(float(s), 4) for s in dec.energy_shares]
    row["edges_lambda"] = [round(float(e), 4) for e in dec.band_edges]
    if args.backward:
        del bands
        xg = x.clone().requires_grad_(True)
        with PeakSampler() as peak:
            bands = dec(xg)
            probe = torch.randn_like(x)
            t0 = time.perf_counter()
            bands.backward(probe.expand_as(bands))
            row["bwd_s"] = time.perf_counter() - t0
        row["rss_peak_bwd"] = peak.peak
    row["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    row["load1"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    print("RESULT " + json.dumps(row), flush=True)


def accuracy(args):
    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
    sys.path.insert(0, ROOT)
    from recbole_ssr.model.spectral import SpectralBandDecomposer, band_energy_shares

    torch.manual_seed(args.seed)
    n = args.accuracy
    adj = build_graph(n, args.degree, args.seed)
    h = torch.randn(n, args.width)
    x = h + torch.sparse.mm(adj, h)
    x = x + torch.sparse.mm(adj, x - h)
    total = float((x.double() ** 2).sum())
    print(f"\naccuracy vs eigen: N={n}, nnz={adj._nnz()}, D={args.width}, signal H + ÂH + Â²H\n")
    print("| M | K | max abs edge diff (λ) | leakage Σ‖ΔB‖²/‖X‖² | max abs norm-share diff | "
          "max abs proj-share - 1/M (cheb) | (eigen) |")
    print("|---|---|---|---|---|---|---|")
    for m in args.bands_list:
        eig = SpectralBandDecomposer(adj, m, "eigen", eigen_max_nodes=n)
        b_eig = eig(x)
        norm_eig = band_energy_shares(b_eig, kind="norm")
        dev_eig = float((eig.energy_shares - 1 / m).abs().max())
        for k in args.orders:
            cheb = SpectralBandDecomposer(adj, m, "chebyshev", cheb_order=k)
            b = cheb(x)
            leak = sum(float(((b[i] - b_eig[i]).double() ** 2).sum()) for i in range(m)) / total
            print(f"| {m} | {k} | {float((cheb.band_edges - eig.band_edges).abs().max()):.4f} | {leak:.4f} | "
                  f"{float((band_energy_shares(b, kind='norm') - norm_eig).abs().max()):.4f} | "
                  f"{float((cheb.energy_shares - 1 / m).abs().max()):.1e} | {dev_eig:.1e} |", flush=True)


def spmm_sweep(args):
    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"\none recurrence step torch.addmm(Y, Â, X, beta=-1, alpha=-2, out=Y), width {args.width}, "
          f"min of {args.repeats}, {torch.get_num_threads()} threads\n")
    print("| N | avg degree | nnz(Â) | min s | median s | ns per nnz·column | load avg (start, end) |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.sweep:
        n, degree = (float(v) for v in spec.split(":"))
        n = int(n)
        adj = build_graph(n, degree, args.seed)
        x, y = torch.randn(n, args.width), torch.randn(n, args.width)
        load_start = os.getloadavg()[0]
        torch.addmm(y, adj, x, beta=-1.0, alpha=-2.0, out=y)  # warm-up (page faults, thread pool)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            torch.addmm(y, adj, x, beta=-1.0, alpha=-2.0, out=y)
            times.append(time.perf_counter() - t0)
        times.sort()
        nnz = adj._nnz()
        print(f"| {n:,} | {degree:g} | {nnz:,} | {times[0]:.3f} | {times[len(times) // 2]:.3f} | "
              f"{times[0] / (nnz * args.width) * 1e9:.3f} | {[round(load_start, 2), round(os.getloadavg()[0], 2)]} |",
              flush=True)
        del adj, x, y


def machine():
    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"nproc={os.cpu_count()}, cpu model '{model}', {mem:.1f} GiB RAM, {platform.platform()}, " \
           f"python {platform.python_version()}"


def fmt(v, nd=2):
    return "" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cheb-nodes", nargs="*", default=["1e4", "1e5", "1e6"])
    p.add_argument("--eigen-nodes", nargs="*", default=["1e3", "5e3"])
    p.add_argument("--degree", type=float, default=10.0, help="average node degree (nnz(Â) ≈ degree·N)")
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--bands", type=int, default=3)
    p.add_argument("--cheb-order", type=int, default=32)
    p.add_argument("--col-chunk", type=int, default=None)
    p.add_argument("--backward", action="store_true", help="also time one backward pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads in the workers (0 = torch default)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--accuracy", type=int, default=0, help="also compare with eigen on a graph of this many nodes")
    p.add_argument("--orders", type=int, nargs="*", default=[8, 16, 24, 32, 48, 64], help="K for --accuracy")
    p.add_argument("--bands-list", type=int, nargs="*", default=[3, 4], help="M for --accuracy")
    p.add_argument("--spmm-sweep", action="store_true", help="time one recurrence step for --sweep graphs")
    p.add_argument("--sweep", nargs="*", default=["1e4:10", "1e5:10", "1e5:20", "1e5:40", "1e6:10", "1e6:20"],
                   help="N:degree pairs for --spmm-sweep")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", default=None, help="append result rows to this JSON-lines file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default="chebyshev", help=argparse.SUPPRESS)
    p.add_argument("--nodes", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    print(f"# {machine()}", flush=True)
    jobs = [("chebyshev", int(float(n))) for n in args.cheb_nodes] + \
           [("eigen", int(float(n))) for n in args.eigen_nodes]
    rows = []
    for method, n in jobs:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--method", method, "--nodes", str(n),
               "--degree", str(args.degree), "--width", str(args.width), "--bands", str(args.bands),
               "--cheb-order", str(args.cheb_order), "--seed", str(args.seed)]
        if args.col_chunk:
            cmd += ["--col-chunk", str(args.col_chunk)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.backward:
            cmd.append("--backward")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{method} N={n}: FAILED (rc={proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(lines[-1][7:])
        rows.append(row)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        print(f"{method:9s} N={n:>8d} nnz={row['nnz']:>9d} call={row['call_s']:.2f}s cpu={row['cpu_s']:.2f}s "
              f"(edges {fmt(row['edges_s'])}s, filter {fmt(row['filter_s'])}s) cached={fmt(row.get('cached_s'))} "
              f"bwd={fmt(row.get('bwd_s'))} rss_start={row['rss_start']:.2f} rss_peak={row['rss_peak']:.2f} "
              f"maxrss={row['maxrss']:.2f} GiB load1={row['load1']} shares={row['shares']} edges={row['edges_lambda']} "
              f"sum_err={row['sum_err']:.1e}", flush=True)
    print("\n| method | N | nnz(Â) | K | call s | CPU s | edges s | filter s | cached s | bwd s | RSS start GiB | "
          "RSS peak GiB | RSS peak bwd GiB | maxrss GiB | threads | load avg (start, end) | shares | edges λ |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['nodes']:,} | {r['nnz']:,} | {fmt(r['cheb_order'])} | {r['call_s']:.2f} | "
              f"{r['cpu_s']:.2f} | "
              f"{fmt(r['edges_s'])} | {fmt(r['filter_s'])} | {fmt(r.get('cached_s'))} | {fmt(r.get('bwd_s'))} | "
              f"{r['rss_start']:.2f} | {r['rss_peak']:.2f} | {fmt(r.get('rss_peak_bwd'))} | {r['maxrss']:.2f} | "
              f"{r['threads']} | {r['load1']} | "
              f"{r['shares']} | "
              f"{r['edges_lambda']} |")
    if args.accuracy:
        accuracy(args)
    if args.spmm_sweep:
        spmm_sweep(args)


if __name__ == "__main__":
    main()
