fn main() {
    std::process::exit(stalwart_upgrade::cli::main());
}
