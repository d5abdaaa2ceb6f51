"""The `prealign` commands: each module holds its commands' options beside their handlers, and
assembles what they run from the library; option defaults come from the library's own."""
