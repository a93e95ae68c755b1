"""A small analysis that crashes on its last line, as real ones do."""

import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
arr = rng.normal(size=(200_000, 4))
df = pd.DataFrame(arr, columns=["price", "qty", "cost", "visits"])
df["revenue"] = df["price"].abs() * df["qty"].abs()
summary = df.describe()
print(summary.loc["mean"])
print(df["revenue_per_visit"].mean())  # a typo: this column does not exist
