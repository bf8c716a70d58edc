"""The bundle stage: a checkpoint and a target in, a sealed, verified bundle out.

  build.py           `build_bundle(model, out, BuildConfig)`: the stages, in order
  stages.py          resumable, content-keyed stages in OUT.partial, claimed and locked
  manifest.py        edgekit.json: artifact table, seal, `verify_bundle`
  engines_script.py  build-engines.sh for the device
  edgellm.py         TensorRT Edge-LLM's exporter, run as a subprocess

Running a bundle is edgekit.runtime.bundle_pipeline's job (`open_bundle`).
"""
