fn main() {
    std::process::exit(inferlat::cli::run());
}
