"""Run the silver transforms on a given engine and print the results as canonical JSON.

`python tests/portability_runner.py local[2]` starts Apache Spark's own Spark Connect server (JVM);
`... sail` uses Sail. The portability test compares the two outputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def canonical(spark) -> dict:
    from spark_jobs import silver_incident

    import silver_fixtures as fx

    published, quarantined, duplicates = silver_incident.transform(
        fx.bronze_frame(spark), fx.SOURCE, fx.reference(spark), fx.PII_KEY, fx.NOW
    )

    def rows(df, key):
        out = [{k: (str(v) if v is not None else None) for k, v in r.asDict().items()} for r in df.collect()]
        return sorted(out, key=lambda r: tuple(str(r[k]) for k in key))

    return {
        "published": rows(published, ["incident_id"]),
        "quarantined": rows(quarantined, ["_source_row_number"]),
        "duplicates": rows(duplicates.select("case_no", "_source_row_number"), ["_source_row_number"]),
    }


def main(engine: str) -> None:
    if engine == "sail":
        from citysafe.engine import spark_session

        with spark_session("sail") as spark:
            result = canonical(spark)
    else:
        from pyspark.sql import SparkSession

        os.environ["PYSPARK_PYTHON"] = sys.executable
        spark = (
            SparkSession.builder.remote(engine)
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        try:
            result = canonical(spark)
        finally:
            spark.stop()
    print("RESULT-JSON " + json.dumps(result, sort_keys=True, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
