//! Host detection: is this a virtual machine, and which hypervisor (a VM is why RAPL and NVML are
//! missing, so [`Meter::auto`](super::Meter::auto) reports such skips as `virtualised`); the host
//! name and CPU model that reports and energy cards record beside every joule figure.

/// The host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), `unknown` when neither is set.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The CPU model (`model name` in `/proc/cpuinfo`), else the architecture (`aarch64`).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Detects a hypervisor: the `hypervisor` CPU flag, named by DMI when possible.
pub fn detect_hypervisor() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flagged = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    if !flagged {
        return None;
    }
    let dmi = [
        "/sys/class/dmi/id/sys_vendor",
        "/sys/class/dmi/id/product_name",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().to_string())
    .find(|s| !s.is_empty());
    Some(
        dmi.or_else(cpuid_hypervisor)
            .unwrap_or_else(|| "unknown hypervisor".to_string()),
    )
}

/// The hypervisor's CPUID vendor signature (leaf 0x4000_0000), e.g. `KVMKVMKVM` → `KVM`.
#[cfg(target_arch = "x86_64")]
fn cpuid_hypervisor() -> Option<String> {
    // Only called when /proc/cpuinfo shows the `hypervisor` flag, so the leaf is defined.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is available on every x86_64 CPU and has no side effects.
    let r = unsafe { std::arch::x86_64::__cpuid(0x4000_0000) };
    let mut sig = Vec::with_capacity(12);
    for reg in [r.ebx, r.ecx, r.edx] {
        sig.extend_from_slice(&reg.to_le_bytes());
    }
    let sig = String::from_utf8_lossy(&sig)
        .trim_matches(char::from(0))
        .to_string();
    let name = match sig.as_str() {
        "KVMKVMKVM" => "KVM",
        "Microsoft Hv" => "Hyper-V",
        "VMwareVMware" => "VMware",
        "XenVMMXenVMM" => "Xen",
        "TCGTCGTCGTCG" => "QEMU (TCG)",
        " lrpepyh  vr" | "ACRNACRNACRN" | "VBoxVBoxVBox" => sig.as_str(),
        other
            if other.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                && !other.trim().is_empty() =>
        {
            other
        }
        _ => return None,
    };
    Some(name.trim().to_string())
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_hypervisor() -> Option<String> {
    None
}
