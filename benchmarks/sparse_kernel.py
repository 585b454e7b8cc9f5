"""Micro-benchmark of the sparse product behind SSR's band filter: Â X with Â the normalised user-item adjacency
(TikTok: 16,018 nodes, 119,082 non-zeros) and X float32 [N, 192], on one thread by default.

    OMP_NUM_THREADS=1 python benchmarks/sparse_kernel.py --data_path=../shared/data      # TikTok's training graph
    OMP_NUM_THREADS=1 python benchmarks/sparse_kernel.py --generated                     # same shape, generated

Every variant computes the same product (or the same Chebyshev recursion); each is checked against the plain
computation (``torch.sparse.mm`` with the COO matrix, fresh output) and its maximum absolute difference printed.
Timings: all variants run round-robin in one process (variant 1, variant 2, ..., then again), ``--repeats`` times;
the table gives the median and its ratio to the plain product, so load from other processes hits all alike.
Two rows are not the same computation in the same order: scipy's kernel (own summation) and the product over
the renumbered graph (each row's sum runs in the new column order); their differences are rounding. The bandwidth
floor: a dense copy and an axpy of the same size as X (L3-resident here) and of 256 MB (DRAM) give the
achievable bytes/s; the floor of one product is the bytes it must move at least (read X and the CSR arrays once,
write Y once; + read Y once for beta != 0) divided by that rate.
"""

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")

TIKTOK_SHAPE = {"users": 9308, "items": 6710, "edges": 59541}  # training interactions (x_label 0)


def tiktok_edges(data_path):
    """(users, items, n_users, n_items) of TikTok's training interactions (MMRec layout, x_label 0)."""
    path = os.path.join(data_path, "tiktok", "tiktok.inter")
    table = np.loadtxt(path, skiprows=1, dtype=np.int64)
    train = table[table[:, 2] == 0]
    return train[:, 0], train[:, 1], int(table[:, 0].max()) + 1, int(table[:, 1].max()) + 1


def generated_edges(users, items, edges, seed=0):
    """A random bipartite graph of TikTok's shape: Zipf-like item popularity (exponent 0.8), every user at least one
    edge, duplicates removed (so slightly fewer than ``edges``)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    item_draw = rng.choice(items, size=edges, p=popularity / popularity.sum())
    user_draw = np.concatenate([np.arange(users), rng.integers(0, users, edges - users)])
    pairs = np.unique(np.stack([user_draw, rng.permutation(items)[item_draw]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1], users, items


def csr_int32(csr):
    """The same CSR matrix with int32 index arrays (MKL's LP64 interface; torch converts int64 ones per call)."""
    return torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32),
                                   csr.values(), csr.shape)


def column_blocked(matrix, x, out, width, beta=0.0, alpha=1.0):
    """out[:, block] = alpha·A x[:, block] + beta·out[:, block] for column blocks of ``width`` (strided views, no
    copies): each block of x stays in cache while the rows of A are swept."""
    for start in range(0, x.shape[1], width):
        block = slice(start, start + width)
        torch.addmm(out[:, block], matrix, x[:, block], beta=beta, alpha=alpha, out=out[:, block])
    return out


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed_round_robin(variants, repeats, clock=time.perf_counter):
    """{name: [seconds]} of ``variants`` ({name: callable}) run round-robin ``repeats`` times after one warm-up."""
    for function in variants.values():
        function()
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, function in variants.items():
            start = clock()
            function()
            times[name].append(clock() - start)
    return times


def bandwidth(nbytes, repeats, clock=time.perf_counter):
    """Achievable bytes/s of a dense copy and of an axpy (y += a·x) on float32 arrays of ``nbytes`` each (torch and
    numpy, one process, interleaved). Copy moves 2·nbytes, axpy 3·nbytes."""
    count = nbytes // 4
    a, b = torch.randn(count), torch.randn(count)
    na, nb = a.numpy(), b.numpy()
    variants = {"torch copy": lambda: b.copy_(a), "torch axpy": lambda: b.add_(a, alpha=0.5),
                "numpy copy": lambda: np.copyto(nb, na)}
    times = timed_round_robin(variants, repeats, clock)
    moved = {"torch copy": 2 * nbytes, "torch axpy": 3 * nbytes, "numpy copy": 2 * nbytes}
    return {name: moved[name] / statistics.median(values) for name, values in times.items()}


def chebyshev_plain(coo, x, order, rows):
    """Rows ``rows`` of T_0..T_order(-Â) x summed with unit weights, products by ``torch.sparse.mm`` (fresh tensors)."""
    prev, cur = x, -torch.sparse.mm(coo, x)
    acc = x[rows] + cur[rows]
    for _ in range(2, order + 1):
        prev, cur = cur, -2.0 * torch.sparse.mm(coo, cur) - prev
        acc = acc + cur[rows]
    return acc


def chebyshev_fused(matrix, x, order, rows, buffers, width=None):
    """The same with the recurrence fused into one addmm per order (T_{k+1} = -2 Â T_k - T_{k-1} written over
    T_{k-1}) in two reused buffers; ``width``: column blocks (see :func:`column_blocked`)."""
    first, second, picked, acc = buffers
    width = width or x.shape[1]
    column_blocked(matrix, x, first, width, alpha=-1.0)
    torch.index_select(x, 0, rows, out=acc)
    acc.add_(torch.index_select(first, 0, rows, out=picked))
    second.copy_(x)
    prev, cur = second, first
    for _ in range(2, order + 1):
        column_blocked(matrix, cur, prev, width, beta=-1.0, alpha=-2.0)
        prev, cur = cur, prev
        acc.add_(torch.index_select(cur, 0, rows, out=picked))
    return acc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data_path", default="../shared/data", help="folder holding tiktok/tiktok.inter")
    parser.add_argument("--generated", action="store_true", help="a generated graph of TikTok's shape instead")
    parser.add_argument("--width", type=int, default=192, help="columns of X (SSR on TikTok: 3 branches x 64)")
    parser.add_argument("--order", type=int, default=16, help="degree of the Chebyshev recursion benchmarked")
    parser.add_argument("--rows", type=int, default=3500, help="rows gathered per order (a batch's distinct nodes)")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock seconds, or CPU seconds of the process (one thread on a shared machine: leaves "
                             "out the time spent waiting for a core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]

    from recbole_ssr.model.graph import bipartite_adjacency

    if args.generated or not os.path.isfile(os.path.join(args.data_path, "tiktok", "tiktok.inter")):
        if not args.generated:
            print(f"({args.data_path}/tiktok/tiktok.inter not found: using a generated graph of the same shape)")
        users, items, n_users, n_items = generated_edges(**TIKTOK_SHAPE)
        source = "generated (TikTok's shape)"
    else:
        users, items, n_users, n_items = tiktok_edges(args.data_path)
        source = "TikTok training graph"
    coo = bipartite_adjacency(users, items, n_users, n_items)
    csr = coo.to_sparse_csr()
    csr32 = csr_int32(csr)
    n, nnz, width = coo.shape[0], coo._nnz(), args.width
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, width, generator=generator)
    x_columns = x.t().contiguous().t()  # column-major copy
    y = torch.randn(n, width, generator=generator)
    out, out_columns = torch.empty(n, width), torch.empty(n, width).t().contiguous().t()
    wide_x, wide_out = torch.cat([x, y], dim=1), torch.empty(n, 2 * width)
    recur_out = torch.empty(n, width)
    import scipy.sparse

    sp32 = scipy.sparse.csr_matrix((csr.values().numpy(), csr.col_indices().numpy().astype(np.int32),
                                    csr.crow_indices().numpy().astype(np.int32)), shape=(n, n))
    sp64 = scipy.sparse.csr_matrix((csr.values().numpy(), csr.col_indices().numpy(), csr.crow_indices().numpy()),
                                   shape=(n, n))
    x_numpy = x.numpy()

    print(f"{source}: N = {n:,}, nnz = {nnz:,}, X float32 [{n:,}, {width}], torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, {args.repeats} round-robin repeats, median, {args.clock} clock")

    # -- one product: y = Â x -----------------------------------------------------------------------------------------
    plain = torch.sparse.mm(coo, x)
    recur_expected = -2.0 * plain - y
    single = {
        "COO torch.sparse.mm (plain)": lambda: torch.sparse.mm(coo, x),
        "CSR int64 torch.sparse.mm": lambda: torch.sparse.mm(csr, x),
        "CSR int64 addmm into a reused buffer": lambda: torch.addmm(out, csr, x, beta=0.0, out=out),
        "CSR int32 addmm into a reused buffer": lambda: torch.addmm(out, csr32, x, beta=0.0, out=out),
        "CSR int32 addmm, column-major X and Y": lambda: torch.addmm(out_columns, csr32, x_columns, beta=0.0,
                                                                      out=out_columns),
        "scipy CSR int32 @ numpy X": lambda: sp32 @ x_numpy,
        "scipy CSR int64 @ numpy X": lambda: sp64 @ x_numpy,
    }
    for block in (32, 64, 96):
        single[f"CSR int32 addmm, column blocks of {block}"] = (
            lambda block=block: column_blocked(csr32, x, out, block))
    single["CSR int32, [X | Y] in one product (per 192 columns)"] = (
        lambda: torch.addmm(wide_out, csr32, wide_x, beta=0.0, out=wide_out))
    # the same product as a weighted gather-sum (torch's embedding_bag kernel, FBGEMM on x86)
    crow, col = csr32.crow_indices(), csr32.col_indices()
    single["embedding_bag gather-sum (FBGEMM), int32 offsets"] = lambda: torch.nn.functional.embedding_bag(
        col, x, crow, mode="sum", per_sample_weights=csr32.values(), include_last_offset=True)
    # locality: nodes renumbered by degree (descending), so the most-gathered rows of X sit together
    order = torch.argsort(-(csr.crow_indices()[1:] - csr.crow_indices()[:-1]), stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(n)
    moved = torch.sparse_coo_tensor(position[coo.indices()], coo.values(), coo.shape).coalesce()
    reordered, x_reordered = csr_int32(moved.to_sparse_csr()), x[order].contiguous()
    single["CSR int32 addmm, nodes renumbered by degree"] = (
        lambda: torch.addmm(out, reordered, x_reordered, beta=0.0, out=out))

    def recurrence(matrix, block=None):
        def step():
            recur_out.copy_(y)
            return column_blocked(matrix, x, recur_out, block or width, beta=-1.0, alpha=-2.0)
        return step

    single["recurrence -2ÂX - Y: plain (sparse.mm, then axpy)"] = lambda: -2.0 * torch.sparse.mm(coo, x) - y
    single["recurrence fused: CSR int64 addmm beta=-1 in place"] = recurrence(csr)
    single["recurrence fused: CSR int32 addmm beta=-1 in place"] = recurrence(csr32)
    single["recurrence fused: CSR int32, column blocks of 64"] = recurrence(csr32, 64)
    single["(copy of Y into the buffer, part of the fused rows)"] = lambda: recur_out.copy_(y)

    def result_of(name):
        value = single[name]()
        value = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
        if "[X | Y]" in name:
            value = value[:, :width]
        if "renumbered" in name:
            value = value[position]
        return value

    checks = {}
    for name in single:
        if name.startswith("("):
            continue
        expected = recur_expected if name.startswith("recurrence") else plain
        value = result_of(name)
        checks[name] = (float((value - expected).abs().max()), bool(torch.equal(value, expected)))
    times = timed_round_robin(single, args.repeats, clock)
    base = statistics.median(times["COO torch.sparse.mm (plain)"])
    print("\n| variant (one product, N x 192) | ms | × plain | max abs diff vs plain | bit-identical |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        if "[X | Y]" in name:
            median /= 2
        diff, same = checks.get(name, (None, None))
        diff_text = "-" if diff is None else f"{diff:.1e}"
        same_text = "-" if same is None else ("yes" if same else "no")
        print(f"| {name} | {median * 1e3:.2f} | {median / base:.2f} | {diff_text} | {same_text} |")

    # -- the Chebyshev recursion of the filter (forward pass of bands_at) -------------------------------------------
    rows = torch.randperm(n, generator=generator)[: args.rows].sort().values
    buffers = [torch.empty(n, width), torch.empty(n, width), torch.empty(len(rows), width), torch.empty(len(rows), width)]
    recursion = {
        f"plain (sparse.mm COO, fresh tensors)": lambda: chebyshev_plain(coo, x, args.order, rows),
        "fused, CSR int64, reused buffers": lambda: chebyshev_fused(csr, x, args.order, rows, buffers),
        "fused, CSR int32, reused buffers": lambda: chebyshev_fused(csr32, x, args.order, rows, buffers),
        "fused, CSR int32, column blocks of 64": lambda: chebyshev_fused(csr32, x, args.order, rows, buffers, 64),
        "fused, CSR int32, column blocks of 96": lambda: chebyshev_fused(csr32, x, args.order, rows, buffers, 96),
    }
    reference = chebyshev_plain(coo, x, args.order, rows)
    checks = {name: float((function().clone() - reference).abs().max()) for name, function in recursion.items()}
    scale = float(reference.abs().max())
    times = timed_round_robin(recursion, max(5, args.repeats // 4), clock)
    base = statistics.median(times["plain (sparse.mm COO, fresh tensors)"])
    print(f"\n| Chebyshev recursion, degree {args.order}, {len(rows):,} rows gathered per order | ms | × plain "
          f"| ms per order | max abs diff (values up to {scale:.0f}) |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1e3:.1f} | {median / base:.2f} | {median * 1e3 / args.order:.2f} "
              f"| {checks[name]:.1e} |")

    # -- the bandwidth floor ---------------------------------------------------------------------------------------
    x_bytes = n * width * 4
    print(f"\n| dense kernel | array size | GB/s |\n|---|---|---|")
    rates = {}
    for label, nbytes in (("X-sized (L3-resident)", x_bytes), ("256 MB (DRAM)", 256 << 20)):
        for name, rate in bandwidth(nbytes, max(5, args.repeats // 2 if nbytes == x_bytes else 5), clock).items():
            rates[(label, name)] = rate
            print(f"| {name} | {label}, {nbytes / 2 ** 20:.1f} MiB | {rate / 1e9:.1f} |")
    best_rate = max(rate for (label, _), rate in rates.items() if label.startswith("X-sized"))
    matrix_bytes = nnz * (4 + 4) + (n + 1) * 4
    floor_bytes = 2 * x_bytes + matrix_bytes
    gathered = nnz * width * 4
    print(f"\nOne product moves at least {floor_bytes / 1e6:.1f} MB (X read once {x_bytes / 1e6:.1f}, Y written once "
          f"{x_bytes / 1e6:.1f}, CSR int32 {matrix_bytes / 1e6:.1f}; +{x_bytes / 1e6:.1f} to read Y for the fused "
          f"recurrence); at the best X-sized rate ({best_rate / 1e9:.1f} GB/s) that is "
          f"{floor_bytes / best_rate * 1e3:.2f} ms ({(floor_bytes + x_bytes) / best_rate * 1e3:.2f} ms fused). "
          f"Row gathers touch nnz x {width} x 4 B = {gathered / 1e6:.0f} MB of X (from cache). "
          f"FLOPs: 2 nnz x {width} = {2 * nnz * width / 1e6:.1f} M.")


if __name__ == "__main__":
    main()
