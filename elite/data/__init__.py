"""The data stages: `download` (Open Images split -> FiftyOne), `curate` (training manifests) and
`mask` (SAM masks). Stage functions: `elite.data.download.run_download`, `elite.data.curate.run_curate`,
`elite.data.masking.run_mask`; each takes its params.yaml section."""
