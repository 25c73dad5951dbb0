"""The sparse runtime: the export format (`format`), the kernels and their fall-backs (`kernels`, `_spmm.c`), which
matrices run sparse on this machine (`calibration`), the encoder forward (`engine`) and ONNX export (`onnx`).
A folder opens on the engine with `sparsebert.load_sparse` (`loading.py`)."""
