"""activedpo's selection server: featurization, V⁻¹ selection and the activedpo.v1 gRPC service."""

__version__ = "0.1.0"
