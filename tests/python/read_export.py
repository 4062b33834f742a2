"""Reads an fstore export (Parquet or CSV) with pyarrow, as a training job would, and
prints what it found as one JSON object: the row count, each column's Arrow type, and
the columns' values (tensors as lists). The Rust test that ran the export asserts on it.

    python read_export.py FILE.parquet|FILE.csv
"""

import json
import sys

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq


def main(path: str) -> None:
    if path.endswith(".parquet"):
        table = pq.read_table(path)
    else:
        table = pa_csv.read_csv(path)
    out = {
        "rows": table.num_rows,
        "types": {f.name: str(f.type) for f in table.schema},
        "values": {
            name: [None if v is None else v for v in table.column(name).to_pylist()]
            for name in table.column_names
        },
    }
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
