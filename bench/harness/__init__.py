"""What every scenario of ``bench/run.py`` shares.

    config    where things go: the checkout, bench/out, the work folder, the pause between runs
    units     sizes: parsing ``2G``, printing ``1.5 GiB``
    tools     the contenders' executables (ours and the peers'), the Debian packages, the other bench scripts
    files     generated random files, their sha256, emptying an output folder
    servers   nginx on 127.0.0.1 and its access log (bytes sent per request)
    timing    one measured run (wall, CPU, peak RSS), interleaved runs, medians and ratios
    report    the printed tables, the targets, bench/out/results.md
    results   bench/out/results.json
    cli       the command line of bench/run.py
"""
