//! `archy`: the Archy node and its command line. See `archy --help`.

fn main() -> std::process::ExitCode {
    archy_marketplace::cli::main()
}
