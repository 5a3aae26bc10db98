// moesae: command-line entry point (subcommands are registered in src/cli/commands.cpp).
int main() { return 0; }
