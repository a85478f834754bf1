"""Generated protobuf code for the llmsim.v1 package (run `make proto`; do not edit)."""
