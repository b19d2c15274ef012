"""One module per CLI command (registered in fna_deploy.cli.COMMANDS, imported lazily)."""
