"""The pyfunc model as MLflow "models from code": MLflow copies this file into the logged model and runs it
on load (no pickled Python objects in the model); `elite` itself travels as the model's code path."""

import mlflow

from elite.registry.pyfunc import ElitePyfunc

mlflow.models.set_model(ElitePyfunc())
