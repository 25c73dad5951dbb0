"""The research tools: experiment grids (`sparsebert experiment` and its YAML files in `experiments/`), their
records and tables, the paired decision rule, plots. They import the product; the product never imports them
(the command line names `research.experiment` as the module of the `experiment` command, and loads it only
when that command runs)."""
