//! The null WASI: the WASI 0.2 interfaces a component built by a standard toolchain imports
//! (componentize-py's Python runtime imports all of them at start-up), linked with nothing behind
//! them. It exists so that such jobs load at all; it gives them no channel in or out and nothing
//! that depends on the data, the host or the passage of time.
//!
//! | interface | what the job gets | why it leaks nothing |
//! |---|---|---|
//! | `cli/environment` | no variables, no arguments, no working directory | constant |
//! | `cli/exit` | ends the job: it fails with [`JobError::Exited`] | no report leaves |
//! | `cli/stdin` | a stream that is closed | constant |
//! | `cli/stdout`, `cli/stderr` | lines appended to the job's log, under the log caps | the same channel as `sluice:job/log`, whose text the job already controls |
//! | `cli/terminal-*` | no terminal | constant |
//! | `clocks/wall-clock` | 2000-01-01T00:00:00Z, always | constant |
//! | `clocks/monotonic-clock` | a virtual clock that starts at 0 and moves only when the job waits on it (a wait returns at once, the clock set to its deadline) | a function of the job's own calls, not of real time |
//! | `filesystem/preopens` | no directories | no descriptor can ever exist |
//! | `filesystem/types` | every method traps: there is no descriptor to call it on | unreachable |
//! | `io/poll`, `io/streams`, `io/error` | the pollables and streams above | as above |
//! | `random/*` | a fixed-seed generator (SplitMix64), the same stream in every run | constant: no host entropy |
//! | `sockets/*` | a network handle that grants nothing: creating a TCP or UDP socket and resolving a name fail with `access-denied`; every socket method traps (there is no socket to call it on) | no socket can exist |
//!
//! The sockets interfaces are linked (denying) rather than refused because componentize-py's
//! Python runtime imports them whatever the job does; refusing them would refuse every Python
//! job. Anything else a component imports (`wasi:http/*`, another clock, an unknown package) is
//! refused at load, naming the import. A job that imports no WASI (every job built with the Rust SDK) is
//! linked without it.
//!
//! The log lines of stdout and stderr are the job's own text, as with `sluice:job/log`: the DP
//! boundary is the query interface, and nothing here reads the data.

use wasmtime::component::{Resource, ResourceTable};

use super::JobState;
use crate::JobError;

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: ["../guest-sdk/wit", "../guest-sdk/wasi"],
        world: "sluice:wasi-job/null-wasi",
        imports: { default: trappable },
        with: {
            "wasi:io/error.error": super::NoError,
            "wasi:io/poll.pollable": super::Pollable,
            "wasi:io/streams.input-stream": super::Stdin,
            "wasi:io/streams.output-stream": super::Output,
            "wasi:filesystem/types.descriptor": super::NoFile,
            "wasi:filesystem/types.directory-entry-stream": super::NoFile,
            "wasi:cli/terminal-input.terminal-input": super::NoTerminal,
            "wasi:cli/terminal-output.terminal-output": super::NoTerminal,
            "wasi:sockets/network.network": super::NoNetwork,
            "wasi:sockets/tcp.tcp-socket": super::NoSocket,
            "wasi:sockets/udp.udp-socket": super::NoSocket,
            "wasi:sockets/udp.incoming-datagram-stream": super::NoSocket,
            "wasi:sockets/udp.outgoing-datagram-stream": super::NoSocket,
            "wasi:sockets/ip-name-lookup.resolve-address-stream": super::NoSocket,
        },
    });
}

use bindings::wasi::cli::{environment, exit, stderr, stdin, stdout};
use bindings::wasi::cli::{terminal_input, terminal_output, terminal_stderr};
use bindings::wasi::cli::{terminal_stdin, terminal_stdout};
use bindings::wasi::clocks::{monotonic_clock, wall_clock};
use bindings::wasi::filesystem::{preopens, types as fs};
use bindings::wasi::io::{error, poll, streams};
use bindings::wasi::random::{insecure, insecure_seed, random};
use bindings::wasi::sockets::{instance_network, ip_name_lookup, network};
use bindings::wasi::sockets::{tcp, tcp_create_socket, udp, udp_create_socket};

/// The interfaces this module links, without version: a component may import these (any 0.2
/// release) besides `sluice:job`.
pub(super) const INTERFACES: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
];

/// The wall clock every job reads: 2000-01-01T00:00:00Z.
const WALL_CLOCK_SECS: u64 = 946_684_800;
/// The seed of the job's random stream (the same in every run, on purpose).
const SEED: u64 = 0x5eed_5eed_5eed_5eed;
/// Bytes a job may ask of `get-random-bytes` at once.
const MAX_RANDOM_BYTES: u64 = 1 << 20;
/// Bytes a job's stdout or stderr holds before a line is forced out.
const MAX_LINE_BYTES: usize = 1024;

/// No `wasi:io/error` is ever created (streams fail only as closed).
pub enum NoError {}
/// No file or directory descriptor is ever created (there are no preopens).
pub enum NoFile {}
/// No terminal is ever created.
pub enum NoTerminal {}
/// No socket, datagram stream or name resolution is ever created.
pub enum NoSocket {}
/// The network handle `instance-network` must return: it grants nothing.
pub struct NoNetwork;

/// A pollable: ready now, or when the virtual monotonic clock reaches an instant.
pub enum Pollable {
    /// Ready at once (streams: stdin is closed, output never blocks).
    Ready,
    /// Ready at this virtual instant, in nanoseconds.
    At(u64),
}

/// The job's stdin: closed.
pub struct Stdin;

/// Where a job's output stream goes.
#[derive(Clone, Copy)]
pub enum Output {
    /// Standard output: `info` lines in the job's log.
    Stdout,
    /// Standard error: `warn` lines in the job's log.
    Stderr,
}

/// The null WASI's state in one job's store.
pub(crate) struct NullWasi {
    table: ResourceTable,
    /// The virtual monotonic clock, in nanoseconds.
    now_ns: u64,
    /// SplitMix64 state.
    rng: u64,
    /// Bytes written to stdout since its last newline.
    stdout: Vec<u8>,
    /// Bytes written to stderr since its last newline.
    stderr: Vec<u8>,
    /// The status the job passed to `exit`, if it called it.
    pub(crate) exited: Option<u8>,
}

impl Default for NullWasi {
    fn default() -> Self {
        Self {
            table: ResourceTable::new(),
            now_ns: 0,
            rng: SEED,
            stdout: Vec::new(),
            stderr: Vec::new(),
            exited: None,
        }
    }
}

impl NullWasi {
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Adds the null WASI to `linker`.
pub(super) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<JobState>,
) -> Result<(), JobError> {
    // Default link options: the `@unstable` parts of WASI (none of which jobs get) stay off.
    bindings::NullWasi::add_to_linker::<JobState, wasmtime::component::HasSelf<JobState>>(
        linker,
        &bindings::LinkOptions::default(),
        |s| s,
    )
    .map_err(|e| JobError::Host(e.to_string()))
}

/// The trap a call on a resource that cannot exist raises.
fn unreachable_resource(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!("jobs have no {what}"))
}

impl JobState {
    /// Appends `bytes` to stdout or stderr, moving each complete line (or each
    /// [`MAX_LINE_BYTES`] without one) into the job's log.
    fn write_output(&mut self, to: Output, bytes: &[u8]) {
        let level = match to {
            Output::Stdout => "info",
            Output::Stderr => "warn",
        };
        for &b in bytes {
            let buf = match to {
                Output::Stdout => &mut self.wasi.stdout,
                Output::Stderr => &mut self.wasi.stderr,
            };
            if b != b'\n' {
                buf.push(b);
            }
            if b == b'\n' || buf.len() >= MAX_LINE_BYTES {
                let line = String::from_utf8_lossy(&std::mem::take(buf)).into_owned();
                self.push_log(level, line);
            }
        }
    }

    /// Moves what stdout and stderr hold without a final newline into the log (at the end of
    /// the job).
    pub(super) fn flush_output(&mut self) {
        for (to, level) in [(Output::Stdout, "info"), (Output::Stderr, "warn")] {
            let buf = match to {
                Output::Stdout => &mut self.wasi.stdout,
                Output::Stderr => &mut self.wasi.stderr,
            };
            if !buf.is_empty() {
                let line = String::from_utf8_lossy(&std::mem::take(buf)).into_owned();
                self.push_log(level, line);
            }
        }
    }

    fn pollable(&mut self, p: Pollable) -> wasmtime::Result<Resource<Pollable>> {
        Ok(self.wasi.table.push(p)?)
    }
}

impl environment::Host for JobState {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}

impl exit::Host for JobState {
    fn exit(&mut self, status: Result<(), ()>) -> wasmtime::Result<()> {
        let code = u8::from(status.is_err());
        self.wasi.exited = Some(code);
        Err(wasmtime::Error::msg(format!("the job called exit({code})")))
    }
    fn exit_with_code(&mut self, code: u8) -> wasmtime::Result<()> {
        self.wasi.exited = Some(code);
        Err(wasmtime::Error::msg(format!("the job called exit({code})")))
    }
}

impl stdin::Host for JobState {
    fn get_stdin(&mut self) -> wasmtime::Result<Resource<Stdin>> {
        Ok(self.wasi.table.push(Stdin)?)
    }
}

impl stdout::Host for JobState {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<Output>> {
        Ok(self.wasi.table.push(Output::Stdout)?)
    }
}

impl stderr::Host for JobState {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<Output>> {
        Ok(self.wasi.table.push(Output::Stderr)?)
    }
}

impl terminal_input::Host for JobState {}
impl terminal_input::HostTerminalInput for JobState {
    fn drop(&mut self, _: Resource<NoTerminal>) -> wasmtime::Result<()> {
        Ok(())
    }
}
impl terminal_output::Host for JobState {}
impl terminal_output::HostTerminalOutput for JobState {
    fn drop(&mut self, _: Resource<NoTerminal>) -> wasmtime::Result<()> {
        Ok(())
    }
}
impl terminal_stdin::Host for JobState {
    fn get_terminal_stdin(&mut self) -> wasmtime::Result<Option<Resource<NoTerminal>>> {
        Ok(None)
    }
}
impl terminal_stdout::Host for JobState {
    fn get_terminal_stdout(&mut self) -> wasmtime::Result<Option<Resource<NoTerminal>>> {
        Ok(None)
    }
}
impl terminal_stderr::Host for JobState {
    fn get_terminal_stderr(&mut self) -> wasmtime::Result<Option<Resource<NoTerminal>>> {
        Ok(None)
    }
}

impl wall_clock::Host for JobState {
    fn now(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(wall_clock::Datetime {
            seconds: WALL_CLOCK_SECS,
            nanoseconds: 0,
        })
    }
    fn resolution(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(wall_clock::Datetime {
            seconds: 0,
            nanoseconds: 1,
        })
    }
}

impl monotonic_clock::Host for JobState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.wasi.now_ns)
    }
    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1)
    }
    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<Pollable>> {
        self.pollable(Pollable::At(when))
    }
    fn subscribe_duration(&mut self, after: u64) -> wasmtime::Result<Resource<Pollable>> {
        let at = self.wasi.now_ns.saturating_add(after);
        self.pollable(Pollable::At(at))
    }
}

impl random::Host for JobState {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_BYTES {
            return Err(wasmtime::Error::msg(format!(
                "a job may ask for at most {MAX_RANDOM_BYTES} random bytes at once"
            )));
        }
        let mut out = Vec::with_capacity(len as usize);
        while out.len() < len as usize {
            out.extend_from_slice(&self.wasi.next_u64().to_le_bytes());
        }
        out.truncate(len as usize);
        Ok(out)
    }
    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.wasi.next_u64())
    }
}

impl insecure::Host for JobState {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        random::Host::get_random_bytes(self, len)
    }
    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.wasi.next_u64())
    }
}

impl insecure_seed::Host for JobState {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok((SEED, !SEED))
    }
}

impl preopens::Host for JobState {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<NoFile>, String)>> {
        Ok(Vec::new())
    }
}

impl error::Host for JobState {}
impl error::HostError for JobState {
    fn to_debug_string(&mut self, _: Resource<NoError>) -> wasmtime::Result<String> {
        Err(unreachable_resource("I/O errors"))
    }
    fn drop(&mut self, _: Resource<NoError>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl poll::Host for JobState {
    /// The ready ones; when none is, the virtual clock moves to the earliest deadline among them
    /// (waiting costs no real time and tells nothing).
    fn poll(&mut self, ins: Vec<Resource<Pollable>>) -> wasmtime::Result<Vec<u32>> {
        let mut at = Vec::with_capacity(ins.len());
        for p in &ins {
            at.push(match self.wasi.table.get(p)? {
                Pollable::Ready => 0,
                Pollable::At(t) => *t,
            });
        }
        let ready = |now: u64| -> Vec<u32> {
            (0..at.len() as u32)
                .filter(|&i| at[i as usize] <= now)
                .collect()
        };
        let now = self.wasi.now_ns;
        let mut out = ready(now);
        if out.is_empty()
            && let Some(&earliest) = at.iter().min()
        {
            self.wasi.now_ns = earliest;
            out = ready(earliest);
        }
        Ok(out)
    }
}

impl poll::HostPollable for JobState {
    fn ready(&mut self, p: Resource<Pollable>) -> wasmtime::Result<bool> {
        Ok(match self.wasi.table.get(&p)? {
            Pollable::Ready => true,
            Pollable::At(t) => *t <= self.wasi.now_ns,
        })
    }
    fn block(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        if let Pollable::At(t) = self.wasi.table.get(&p)? {
            self.wasi.now_ns = self.wasi.now_ns.max(*t);
        }
        Ok(())
    }
    fn drop(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        self.wasi.table.delete(p)?;
        Ok(())
    }
}

impl streams::Host for JobState {}

/// Stream methods that find the stream closed (stdin, and splicing from it).
macro_rules! closed_methods {
    ($($name:ident($($t:ty),*) -> $ok:ty;)*) => {
        $(fn $name(&mut self, $(_: $t),*) -> wasmtime::Result<Result<$ok, streams::StreamError>> {
            Ok(Err(streams::StreamError::Closed))
        })*
    };
}

impl streams::HostInputStream for JobState {
    closed_methods! {
        read(Resource<Stdin>, u64) -> Vec<u8>;
        blocking_read(Resource<Stdin>, u64) -> Vec<u8>;
        skip(Resource<Stdin>, u64) -> u64;
        blocking_skip(Resource<Stdin>, u64) -> u64;
    }
    fn subscribe(&mut self, _: Resource<Stdin>) -> wasmtime::Result<Resource<Pollable>> {
        self.pollable(Pollable::Ready)
    }
    fn drop(&mut self, s: Resource<Stdin>) -> wasmtime::Result<()> {
        self.wasi.table.delete(s)?;
        Ok(())
    }
}

/// What `check-write` offers: the log line cap, so that no write is ever refused.
const WRITE_CHUNK: u64 = 4096;

impl streams::HostOutputStream for JobState {
    fn check_write(
        &mut self,
        _: Resource<Output>,
    ) -> wasmtime::Result<Result<u64, streams::StreamError>> {
        Ok(Ok(WRITE_CHUNK))
    }
    fn write(
        &mut self,
        s: Resource<Output>,
        contents: Vec<u8>,
    ) -> wasmtime::Result<Result<(), streams::StreamError>> {
        let to = *self.wasi.table.get(&s)?;
        self.write_output(to, &contents);
        Ok(Ok(()))
    }
    fn blocking_write_and_flush(
        &mut self,
        s: Resource<Output>,
        contents: Vec<u8>,
    ) -> wasmtime::Result<Result<(), streams::StreamError>> {
        self.write(s, contents)
    }
    fn flush(&mut self, _: Resource<Output>) -> wasmtime::Result<Result<(), streams::StreamError>> {
        Ok(Ok(()))
    }
    fn blocking_flush(
        &mut self,
        _: Resource<Output>,
    ) -> wasmtime::Result<Result<(), streams::StreamError>> {
        Ok(Ok(()))
    }
    fn subscribe(&mut self, _: Resource<Output>) -> wasmtime::Result<Resource<Pollable>> {
        self.pollable(Pollable::Ready)
    }
    fn write_zeroes(
        &mut self,
        s: Resource<Output>,
        len: u64,
    ) -> wasmtime::Result<Result<(), streams::StreamError>> {
        let len = len.min(WRITE_CHUNK) as usize;
        self.write(s, vec![0; len])
    }
    fn blocking_write_zeroes_and_flush(
        &mut self,
        s: Resource<Output>,
        len: u64,
    ) -> wasmtime::Result<Result<(), streams::StreamError>> {
        self.write_zeroes(s, len)
    }
    closed_methods! {
        splice(Resource<Output>, Resource<Stdin>, u64) -> u64;
        blocking_splice(Resource<Output>, Resource<Stdin>, u64) -> u64;
    }
    fn drop(&mut self, s: Resource<Output>) -> wasmtime::Result<()> {
        self.wasi.table.delete(s)?;
        Ok(())
    }
}

impl fs::Host for JobState {
    fn filesystem_error_code(
        &mut self,
        _: Resource<NoError>,
    ) -> wasmtime::Result<Option<fs::ErrorCode>> {
        Ok(None)
    }
}

impl fs::HostDirectoryEntryStream for JobState {
    fn read_directory_entry(
        &mut self,
        _: Resource<NoFile>,
    ) -> wasmtime::Result<Result<Option<fs::DirectoryEntry>, fs::ErrorCode>> {
        Err(unreachable_resource("directories"))
    }
    fn drop(&mut self, _: Resource<NoFile>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// Methods of a resource no job can hold: each traps (the component model gives a job only the
/// handles the host created, and the host creates no descriptor).
macro_rules! unreachable_methods {
    ($what:literal on $res:ty: $($name:ident($($t:ty),*) -> $ret:ty;)*) => {
        $(fn $name(&mut self, _: Resource<$res>, $(_: $t),*) -> wasmtime::Result<$ret> {
            Err(unreachable_resource($what))
        })*
    };
}

type FsResult<T> = Result<T, fs::ErrorCode>;

impl fs::HostDescriptor for JobState {
    unreachable_methods! { "files" on NoFile:
        read_via_stream(fs::Filesize) -> FsResult<Resource<Stdin>>;
        write_via_stream(fs::Filesize) -> FsResult<Resource<Output>>;
        append_via_stream() -> FsResult<Resource<Output>>;
        advise(fs::Filesize, fs::Filesize, fs::Advice) -> FsResult<()>;
        sync_data() -> FsResult<()>;
        get_flags() -> FsResult<fs::DescriptorFlags>;
        get_type() -> FsResult<fs::DescriptorType>;
        set_size(fs::Filesize) -> FsResult<()>;
        set_times(fs::NewTimestamp, fs::NewTimestamp) -> FsResult<()>;
        read(fs::Filesize, fs::Filesize) -> FsResult<(Vec<u8>, bool)>;
        write(Vec<u8>, fs::Filesize) -> FsResult<fs::Filesize>;
        read_directory() -> FsResult<Resource<NoFile>>;
        sync() -> FsResult<()>;
        create_directory_at(String) -> FsResult<()>;
        stat() -> FsResult<fs::DescriptorStat>;
        stat_at(fs::PathFlags, String) -> FsResult<fs::DescriptorStat>;
        set_times_at(fs::PathFlags, String, fs::NewTimestamp, fs::NewTimestamp) -> FsResult<()>;
        link_at(fs::PathFlags, String, Resource<NoFile>, String) -> FsResult<()>;
        open_at(fs::PathFlags, String, fs::OpenFlags, fs::DescriptorFlags) -> FsResult<Resource<NoFile>>;
        readlink_at(String) -> FsResult<String>;
        remove_directory_at(String) -> FsResult<()>;
        rename_at(String, Resource<NoFile>, String) -> FsResult<()>;
        symlink_at(String, String) -> FsResult<()>;
        unlink_file_at(String) -> FsResult<()>;
        is_same_object(Resource<NoFile>) -> bool;
        metadata_hash() -> FsResult<fs::MetadataHashValue>;
        metadata_hash_at(fs::PathFlags, String) -> FsResult<fs::MetadataHashValue>;
    }
    fn drop(&mut self, _: Resource<NoFile>) -> wasmtime::Result<()> {
        Ok(())
    }
}

type NetResult<T> = Result<T, network::ErrorCode>;

impl network::Host for JobState {
    fn network_error_code(
        &mut self,
        _: Resource<NoError>,
    ) -> wasmtime::Result<Option<network::ErrorCode>> {
        Ok(None)
    }
}
impl network::HostNetwork for JobState {
    fn drop(&mut self, n: Resource<NoNetwork>) -> wasmtime::Result<()> {
        self.wasi.table.delete(n)?;
        Ok(())
    }
}

impl instance_network::Host for JobState {
    fn instance_network(&mut self) -> wasmtime::Result<Resource<NoNetwork>> {
        Ok(self.wasi.table.push(NoNetwork)?)
    }
}

impl ip_name_lookup::Host for JobState {
    fn resolve_addresses(
        &mut self,
        _: Resource<NoNetwork>,
        _: String,
    ) -> wasmtime::Result<NetResult<Resource<NoSocket>>> {
        Ok(Err(network::ErrorCode::AccessDenied))
    }
}
impl ip_name_lookup::HostResolveAddressStream for JobState {
    unreachable_methods! { "name resolutions" on NoSocket:
        resolve_next_address() -> NetResult<Option<network::IpAddress>>;
        subscribe() -> Resource<Pollable>;
    }
    fn drop(&mut self, _: Resource<NoSocket>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl tcp_create_socket::Host for JobState {
    fn create_tcp_socket(
        &mut self,
        _: network::IpAddressFamily,
    ) -> wasmtime::Result<NetResult<Resource<NoSocket>>> {
        Ok(Err(network::ErrorCode::AccessDenied))
    }
}

impl udp_create_socket::Host for JobState {
    fn create_udp_socket(
        &mut self,
        _: network::IpAddressFamily,
    ) -> wasmtime::Result<NetResult<Resource<NoSocket>>> {
        Ok(Err(network::ErrorCode::AccessDenied))
    }
}

impl tcp::Host for JobState {}
impl tcp::HostTcpSocket for JobState {
    unreachable_methods! { "sockets" on NoSocket:
        start_bind(Resource<NoNetwork>, network::IpSocketAddress) -> NetResult<()>;
        finish_bind() -> NetResult<()>;
        start_connect(Resource<NoNetwork>, network::IpSocketAddress) -> NetResult<()>;
        finish_connect() -> NetResult<(Resource<Stdin>, Resource<Output>)>;
        start_listen() -> NetResult<()>;
        finish_listen() -> NetResult<()>;
        accept() -> NetResult<(Resource<NoSocket>, Resource<Stdin>, Resource<Output>)>;
        local_address() -> NetResult<network::IpSocketAddress>;
        remote_address() -> NetResult<network::IpSocketAddress>;
        is_listening() -> bool;
        address_family() -> network::IpAddressFamily;
        set_listen_backlog_size(u64) -> NetResult<()>;
        keep_alive_enabled() -> NetResult<bool>;
        set_keep_alive_enabled(bool) -> NetResult<()>;
        keep_alive_idle_time() -> NetResult<u64>;
        set_keep_alive_idle_time(u64) -> NetResult<()>;
        keep_alive_interval() -> NetResult<u64>;
        set_keep_alive_interval(u64) -> NetResult<()>;
        keep_alive_count() -> NetResult<u32>;
        set_keep_alive_count(u32) -> NetResult<()>;
        hop_limit() -> NetResult<u8>;
        set_hop_limit(u8) -> NetResult<()>;
        receive_buffer_size() -> NetResult<u64>;
        set_receive_buffer_size(u64) -> NetResult<()>;
        send_buffer_size() -> NetResult<u64>;
        set_send_buffer_size(u64) -> NetResult<()>;
        subscribe() -> Resource<Pollable>;
        shutdown(tcp::ShutdownType) -> NetResult<()>;
    }
    fn drop(&mut self, _: Resource<NoSocket>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl udp::Host for JobState {}
impl udp::HostUdpSocket for JobState {
    unreachable_methods! { "sockets" on NoSocket:
        start_bind(Resource<NoNetwork>, network::IpSocketAddress) -> NetResult<()>;
        finish_bind() -> NetResult<()>;
        stream(Option<network::IpSocketAddress>) -> NetResult<(Resource<NoSocket>, Resource<NoSocket>)>;
        local_address() -> NetResult<network::IpSocketAddress>;
        remote_address() -> NetResult<network::IpSocketAddress>;
        address_family() -> network::IpAddressFamily;
        unicast_hop_limit() -> NetResult<u8>;
        set_unicast_hop_limit(u8) -> NetResult<()>;
        receive_buffer_size() -> NetResult<u64>;
        set_receive_buffer_size(u64) -> NetResult<()>;
        send_buffer_size() -> NetResult<u64>;
        set_send_buffer_size(u64) -> NetResult<()>;
        subscribe() -> Resource<Pollable>;
    }
    fn drop(&mut self, _: Resource<NoSocket>) -> wasmtime::Result<()> {
        Ok(())
    }
}
impl udp::HostIncomingDatagramStream for JobState {
    unreachable_methods! { "sockets" on NoSocket:
        receive(u64) -> NetResult<Vec<udp::IncomingDatagram>>;
        subscribe() -> Resource<Pollable>;
    }
    fn drop(&mut self, _: Resource<NoSocket>) -> wasmtime::Result<()> {
        Ok(())
    }
}
impl udp::HostOutgoingDatagramStream for JobState {
    unreachable_methods! { "sockets" on NoSocket:
        check_send() -> NetResult<u64>;
        send(Vec<udp::OutgoingDatagram>) -> NetResult<u64>;
        subscribe() -> Resource<Pollable>;
    }
    fn drop(&mut self, _: Resource<NoSocket>) -> wasmtime::Result<()> {
        Ok(())
    }
}
