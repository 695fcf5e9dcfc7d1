//! berth's demo application, made from berth itself so that it needs no download: a tiny HTTP
//! server (`berth demo-server`) answering with the pod's name, its IP and a request counter,
//! and the files that make berth runnable as an image (its binary, plus the interpreter and
//! shared libraries its ELF headers name).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Serves until killed: one thread per connection, one answer per request.
pub fn serve(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let name = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .map(|h| h.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let ip = pod_ip().map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    let counter = Arc::new(AtomicU64::new(0));
    tracing::info!(%listen, %name, %ip, "demo server listening");
    println!("demo: http://{listen}/");
    for stream in listener.incoming().flatten() {
        let (name, ip, counter) = (name.clone(), ip.clone(), counter.clone());
        std::thread::spawn(move || {
            if let Err(e) = answer(stream, &name, &ip, &counter) {
                tracing::debug!("demo connection: {e}");
            }
        });
    }
    Ok(())
}

fn answer(stream: TcpStream, name: &str, ip: &str, counter: &AtomicU64) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        // The request line and headers; the body (if any) is ignored.
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut keep_alive = request.contains("HTTP/1.1");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if lower.starts_with("connection:") {
                keep_alive = lower.contains("keep-alive");
            }
        }
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let body = format!("pod {name} ip {ip} requests {n}\n");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
            body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        )?;
        writer.flush()?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// The first address of a non-loopback interface (eth0 in a pod).
fn pod_ip() -> Option<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|i| i.interface_name != "lo")
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())))
        .next()
}

/// Host file → path inside the image: the running berth binary at `/berth`, and every
/// shared object it needs at the path the dynamic loader looks for it.
pub fn self_files() -> Result<Vec<(PathBuf, PathBuf)>> {
    let exe = std::env::current_exe().context("locating the berth binary")?;
    let mut files = vec![(exe.clone(), PathBuf::from("/berth"))];
    let mut pending = vec![exe];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = pending.pop() {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let elf = elf_dependencies(&bytes)
            .with_context(|| format!("{}: not a usable ELF file", path.display()))?;
        if let Some(interp) = elf.interpreter {
            let interp = PathBuf::from(interp);
            if seen.insert(interp.clone()) {
                files.push((std::fs::canonicalize(&interp)?, interp.clone()));
            }
        }
        for needed in elf.needed {
            let found = LIBRARY_DIRS
                .iter()
                .map(|dir| Path::new(dir).join(&needed))
                .find(|p| p.exists())
                .with_context(|| format!("shared library {needed} not found"))?;
            if seen.insert(found.clone()) {
                files.push((std::fs::canonicalize(&found)?, found.clone()));
                pending.push(found);
            }
        }
    }
    Ok(files)
}

const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Makes the demo image `reference` in `store`: one layer holding berth and the shared
/// libraries it needs, with `/berth demo-server` as its entrypoint, port 8080 exposed.
pub fn write_image(
    store: &berth_image::ImageStore,
    reference: &berth_image::Reference,
) -> Result<()> {
    let rootfs = tempfile::tempdir().context("making a scratch directory")?;
    write_rootfs(rootfs.path())?;
    let layer = berth_image::write::layer_from_dir(store.content(), rootfs.path())?;
    let mut config = oci_spec::image::Config::default();
    config.set_entrypoint(Some(vec!["/berth".into(), "demo-server".into()]));
    config.set_exposed_ports(Some(vec!["8080/tcp".into()]));
    config.set_labels(Some(
        [(
            "org.opencontainers.image.title".to_string(),
            "berth demo".to_string(),
        )]
        .into(),
    ));
    let digest = berth_image::write::write_image(store, config, &[layer])?;
    store.tag(reference, &digest)?;
    Ok(())
}

/// Writes a root filesystem with berth runnable in it (`/berth demo-server`).
fn write_rootfs(dir: &Path) -> Result<()> {
    for (host, inside) in self_files()? {
        let target = dir.join(inside.strip_prefix("/").unwrap_or(&inside));
        std::fs::create_dir_all(target.parent().expect("paths in the image have a parent"))?;
        std::fs::copy(&host, &target)
            .with_context(|| format!("copying {} to {}", host.display(), target.display()))?;
    }
    for empty in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(empty))?;
    }
    Ok(())
}

#[derive(Debug, Default, PartialEq)]
struct ElfDependencies {
    interpreter: Option<String>,
    needed: Vec<String>,
}

/// PT_INTERP and the DT_NEEDED entries of a 64-bit little-endian ELF file.
fn elf_dependencies(bytes: &[u8]) -> Result<ElfDependencies> {
    let u16_at = |o: usize| -> Result<u64> {
        Ok(u16::from_le_bytes(bytes.get(o..o + 2).context("truncated")?.try_into()?) as u64)
    };
    let u32_at = |o: usize| -> Result<u64> {
        Ok(u32::from_le_bytes(bytes.get(o..o + 4).context("truncated")?.try_into()?) as u64)
    };
    let u64_at = |o: usize| -> Result<u64> {
        Ok(u64::from_le_bytes(
            bytes.get(o..o + 8).context("truncated")?.try_into()?,
        ))
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    let mut interpreter = None;
    let mut dynamic = None;
    let mut loads = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (kind, offset, vaddr, filesz) = (
            u32_at(ph)?,
            u64_at(ph + 8)?,
            u64_at(ph + 16)?,
            u64_at(ph + 32)?,
        );
        match kind {
            1 => loads.push((vaddr, offset, filesz)),
            2 => dynamic = Some((offset as usize, filesz as usize)),
            3 => {
                let raw = bytes
                    .get(offset as usize..(offset + filesz) as usize)
                    .context("truncated interpreter")?;
                interpreter = Some(
                    String::from_utf8_lossy(raw)
                        .trim_end_matches('\0')
                        .to_string(),
                );
            }
            _ => {}
        }
    }
    let Some((dyn_offset, dyn_size)) = dynamic else {
        return Ok(ElfDependencies {
            interpreter,
            needed: vec![],
        }); // static
    };
    let (mut strtab, mut needed_offsets) = (None, Vec::new());
    for entry in (dyn_offset..dyn_offset + dyn_size).step_by(16) {
        match (u64_at(entry)?, u64_at(entry + 8)?) {
            (0, _) => break,
            (1, value) => needed_offsets.push(value as usize),
            (5, value) => strtab = Some(value),
            _ => {}
        }
    }
    let strtab = strtab.context("no string table")?;
    // The string table is given as an address: find the file offset of its segment.
    let strtab_offset = loads
        .iter()
        .find(|(vaddr, _, size)| strtab >= *vaddr && strtab < vaddr + size)
        .map(|(vaddr, offset, _)| (strtab - vaddr + offset) as usize)
        .context("string table outside the loaded segments")?;
    let needed = needed_offsets
        .into_iter()
        .map(|o| {
            let start = strtab_offset + o;
            let end = bytes[start..]
                .iter()
                .position(|b| *b == 0)
                .map(|n| start + n)
                .context("unterminated name")?;
            Ok(String::from_utf8_lossy(&bytes[start..end]).to_string())
        })
        .collect::<Result<_>>()?;
    Ok(ElfDependencies {
        interpreter,
        needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berth_names_libc_and_its_loader() {
        let exe = std::env::current_exe().unwrap();
        let deps = elf_dependencies(&std::fs::read(exe).unwrap()).unwrap();
        assert!(
            deps.interpreter
                .as_deref()
                .is_some_and(|i| i.contains("ld-linux")),
            "{deps:?}"
        );
        assert!(
            deps.needed.iter().any(|n| n.starts_with("libc.so")),
            "{deps:?}"
        );
    }

    #[test]
    fn self_files_include_the_binary_and_libc() {
        let files = self_files().unwrap();
        assert_eq!(files[0].1, PathBuf::from("/berth"));
        assert!(files
            .iter()
            .any(|(_, inside)| inside.to_string_lossy().contains("libc.so")));
    }

    #[test]
    fn garbage_is_not_elf() {
        assert!(elf_dependencies(b"#!/bin/sh\n").is_err());
    }
}
