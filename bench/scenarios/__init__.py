"""The scenarios of issue 8, one module each, ours and its peers side by side; ``bench/run.py`` runs them.

    s1_one_file      one big file over one connection: fetch --hash vs curl, wget, aria2c, curl && sha256sum
    s2_capped        nginx ``limit_rate 20m`` per connection: --connections 8 vs aria2c -x8 -s8 (and curl)
    s3_resume        SIGKILLs at random offsets: bytes re-sent per interruption vs curl -C -, wget -c
    s4_small_files   1,000 files of 64 KiB: datasets download custom --urls vs aria2c -i -j8, wget -i
    s5_cached_rerun  fully cached re-run of the flow (small and big dataset) vs a one-task Prefect flow
    s6_hub_snapshot  bench/bench_snapshot.py: resumable.hub.snapshot vs huggingface_hub.snapshot_download
    s7_extract       bench/bench_extract.py: resumable.extract vs tar -xf
    s8_startup       train-pipeline fetch --help
    s9_tls           one big file over HTTPS: fetch --hash (1 and 4 connections) vs curl -o && sync, aria2c -x4

Scenarios 1-5 and 9 take the running nginx (``bench.harness.servers.Nginx``); each ``run`` records its entry
in ``bench.harness.results.Results`` under its number.
"""
