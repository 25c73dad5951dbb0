"""The names the pruning, export, bench and metric components register, for the command line's choices without
importing them (tests/test_pruning.py checks the criteria, patterns, allocations and metrics against their
registries)."""

CRITERIA = ("magnitude", "taylor")
ALLOCATIONS = ("global", "uniform")
PATTERNS = ("unstructured", "1x4")
VALUE_DTYPES = ("int8", "fp16", "fp32")
BENCH_ENGINES = ("pytorch-fp32", "pytorch-int8", "onnxruntime-fp32", "onnxruntime-int8", "onnxruntime-int8-fused",
                 "sparsebert-fp32", "sparsebert-int8", "sparsebert-int8-1x4")
METRICS = ("accuracy", "f1_macro", "f1", "matthews_corr", "spearman", "pearson")
