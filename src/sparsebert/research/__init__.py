"""The research tools: experiment grids (`sparsebert experiment` and its YAML files in `experiments/`), their
records and tables, the paired decision rule, plots. They import the product; the product never imports them
(`jobs.job_module` imports `research.experiment` by name, only when the `experiment` command runs)."""
