"""The target-data contract (Great Expectations): ``validate_dataset(directory, config)``.

Great Expectations itself is imported only when a data set is validated.
"""

from redraw.validation.suite import Failure, ValidationConfig, ValidationResult, validate_dataset

__all__ = ["Failure", "ValidationConfig", "ValidationResult", "validate_dataset"]
