// The proxy allocates and frees small buffers on every request; mimalloc's thread-local free
// lists keep that off glibc malloc's locks, which showed in the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    appliance::cli::main()
}
