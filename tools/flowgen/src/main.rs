//! `flowgen --help`; see src/lib.rs.
fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(flowgen::run(&argv));
}
