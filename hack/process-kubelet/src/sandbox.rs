//! (I/O, runs in the child) `rc-process-kubelet sandbox ...`: the few steps between fork and the
//! container's program, done in a fresh single-threaded process so that no `unsafe` `pre_exec`
//! is needed. It:
//!
//! 1. starts a new session (the program leads its own process group, so the kubelet can signal
//!    everything it spawns with one `killpg`) and asks for SIGKILL when the kubelet dies;
//! 2. joins the pod's network namespace (`/run/netns/<name>`, made by `net.rs`);
//! 3. unshares a private mount namespace and UTS namespace, sets the hostname to the pod name;
//! 4. bind-mounts each volume directory at its `mountPath` (parents first; sources are opened
//!    before anything is mounted, so a volume over `/tmp` cannot hide a later source under
//!    `/tmp`); a missing mount point is created on the host filesystem (an empty directory);
//! 5. with `--uid`, switches to the pod's user and groups (`runAsUser`, `runAsGroup`, `fsGroup`,
//!    `supplementalGroups`) and asks again for SIGKILL when the kubelet dies;
//! 6. `fexecve`s the program opened before the mounts, with the environment it was given.
//!
//! It never returns on success; on failure it prints the reason and exits 127, which the kubelet
//! reports like any container exit.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::Signal;

/// Arguments of the hidden `sandbox` subcommand (built by `runtime/start.rs`).
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Network namespace name under /run/netns.
    #[arg(long)]
    pub netns: String,
    #[arg(long)]
    pub hostname: String,
    /// SRC:DST or SRC:DST:ro, repeated.
    #[arg(long = "bind")]
    pub binds: Vec<String>,
    #[arg(long, default_value = "/")]
    pub workdir: PathBuf,
    /// Run the program as this user (`runAsUser`), group (`runAsGroup`) and supplementary
    /// groups (`fsGroup`, `supplementalGroups`); by default as the kubelet's user.
    #[arg(long)]
    pub uid: Option<u32>,
    #[arg(long)]
    pub gid: Option<u32>,
    #[arg(long = "group")]
    pub groups: Vec<u32>,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

struct Bind {
    src: PathBuf,
    dst: PathBuf,
    read_only: bool,
}

fn parse_bind(spec: &str) -> anyhow::Result<Bind> {
    let (rest, read_only) = match spec.strip_suffix(":ro") {
        Some(r) => (r, true),
        None => (spec, false),
    };
    let Some((src, dst)) = rest.split_once(':') else {
        bail!("--bind {spec:?}: expected SRC:DST[:ro]");
    };
    Ok(Bind {
        src: src.into(),
        dst: dst.into(),
        read_only,
    })
}

/// Sets up the sandbox and execs; returns only with the reason it could not.
pub fn exec(args: SandboxArgs) -> anyhow::Error {
    match try_exec(args) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// The steps of the module doc, in order.
fn try_exec(args: SandboxArgs) -> anyhow::Result<std::convert::Infallible> {
    nix::unistd::setsid().context("setsid")?;
    die_with_kubelet()?;
    enter_namespaces(&args.netns, &args.hostname)?;
    let Some(program) = args.command.first() else {
        bail!("no program given");
    };
    let program_file = File::open(program).with_context(|| format!("opening {program}"))?;
    mount_volumes(&args.binds)?;
    std::env::set_current_dir(&args.workdir)
        .with_context(|| format!("chdir {}", args.workdir.display()))?;
    if let Some(uid) = args.uid {
        become_user(uid, args.gid.unwrap_or(0), &args.groups)?;
    }
    exec_program(program, &program_file, &args.command)
}

/// SIGKILL when the kubelet dies; fails if it already has (we were reparented to init).
fn die_with_kubelet() -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    if nix::unistd::getppid().as_raw() == 1 {
        bail!("the kubelet exited before the container started");
    }
    Ok(())
}

/// Joins the pod's network namespace, then a private mount and UTS namespace of its own.
fn enter_namespaces(netns_name: &str, hostname: &str) -> anyhow::Result<()> {
    let netns = File::open(Path::new("/run/netns").join(netns_name))
        .with_context(|| format!("opening network namespace {netns_name}"))?;
    setns(&netns, CloneFlags::CLONE_NEWNET).context("setns(net)")?;
    drop(netns);
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS).context("unshare(mount, uts)")?;
    // Nothing mounted below may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private")?;
    nix::unistd::sethostname(hostname).context("sethostname")?;
    Ok(())
}

/// Every `--bind`, parents first; all sources are opened before the first mount.
fn mount_volumes(specs: &[String]) -> anyhow::Result<()> {
    let mut binds = specs
        .iter()
        .map(|b| parse_bind(b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Parents before children, so a volume inside another volume stays visible.
    binds.sort_by_key(|b| b.dst.components().count());
    let sources = binds
        .iter()
        .map(|b| File::open(&b.src).with_context(|| format!("opening {}", b.src.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (bind, src) in binds.iter().zip(&sources) {
        bind_mount(bind, src)?;
    }
    Ok(())
}

/// Mounts the opened `src` at `bind.dst` (through its fd, so that earlier mounts cannot hide it).
fn bind_mount(bind: &Bind, src: &File) -> anyhow::Result<()> {
    let is_dir = src.metadata().map(|m| m.is_dir()).unwrap_or(true);
    ensure_mount_point(&bind.dst, is_dir)?;
    let via_fd = format!("/proc/self/fd/{}", src.as_raw_fd());
    mount(
        Some(via_fd.as_str()),
        &bind.dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "bind-mounting {} at {}",
            bind.src.display(),
            bind.dst.display()
        )
    })?;
    if bind.read_only {
        mount(
            None::<&str>,
            &bind.dst,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .with_context(|| format!("remounting {} read-only", bind.dst.display()))?;
    }
    Ok(())
}

/// Groups first (only root may change them), the user last; a credential change clears the
/// parent-death signal, so it is asked for again.
fn become_user(uid: u32, gid: u32, groups: &[u32]) -> anyhow::Result<()> {
    let groups: Vec<nix::unistd::Gid> = groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).context("setgroups")?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)).context("setgid")?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).context("setuid")?;
    die_with_kubelet()
}

/// `fexecve`s the opened program with `command` as its argv and this process's environment.
fn exec_program(
    name: &str,
    program: &File,
    command: &[String],
) -> anyhow::Result<std::convert::Infallible> {
    let argv = command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .context("NUL byte in an argument")?;
    let envp = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .collect::<Result<Vec<_>, _>>()
        .context("NUL byte in the environment")?;
    let err = match nix::unistd::fexecve(program, &argv, &envp) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    Err(err).with_context(|| format!("exec {name}"))
}

fn ensure_mount_point(dst: &Path, is_dir: bool) -> anyhow::Result<()> {
    if dst.exists() {
        return Ok(());
    }
    if is_dir {
        std::fs::create_dir_all(dst)
    } else {
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        File::create(dst).map(drop)
    }
    .with_context(|| format!("creating mount point {}", dst.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn bind_specs_parse_with_and_without_ro() {
        let b = parse_bind("/a/b:/data").unwrap();
        assert_eq!(
            (b.src, b.dst, b.read_only),
            ("/a/b".into(), "/data".into(), false)
        );
        let b = parse_bind("/x:/etc/rc-node:ro").unwrap();
        assert_eq!(
            (b.src, b.dst, b.read_only),
            ("/x".into(), "/etc/rc-node".into(), true)
        );
        assert!(parse_bind("/nocolon").is_err());
    }
}
