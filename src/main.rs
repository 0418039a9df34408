fn main() -> std::process::ExitCode {
    appliance::cli::main()
}
