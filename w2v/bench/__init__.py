"""Speed measurements: the model on a GPU beside its peer (`gpu`), the audio pipeline (`data`)."""
