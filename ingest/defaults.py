"""Option defaults shown by the command line, in a module that imports nothing (the CLI must start fast):
the option dataclasses (IngestOptions, RetrievalOptions) and the CLI both take them from here."""

MAX_FILE_MB = 50.0  # IngestOptions.max_file_mb: larger files are skipped with a reason
TOP_K = 5  # RetrievalOptions.top_k: passages given to the model
OCR_TIMEOUT_S = 600.0  # per file: the Tesseract time all scanned pages of one file may take together
