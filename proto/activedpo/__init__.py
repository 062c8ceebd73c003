"""activedpo's wire contract: versioned protobuf packages (``activedpo.v1``) and their generated stubs."""
