//! GDT with a TSS (for the fault stack), the IDT, and exception reports.
//!
//! Every CPU exception lands in `exception_dispatch`, which prints vector,
//! error code, RIP, CR2 and the top of the stack, then calls the fatal hook
//! (the kernel's: crash the domain). Double fault, NMI, machine check and
//! page fault run on their own stack (IST1) so that a stack overflow into
//! the guard page is still reported.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pih_xen::error;

const KERNEL_CS: u16 = 0x08;
const TSS_SEL: u16 = 0x18;
/// The vector Xen raises for event channel upcalls (see hvm::set_callback_vector).
pub const EVENT_VECTOR: u8 = 0xf3;

#[repr(C, packed)]
struct Tss {
    _r0: u32,
    rsp: [u64; 3],
    _r1: u64,
    ist: [u64; 7],
    _r2: u64,
    _r3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct FaultStack([u8; 16384]);
static mut FAULT_STACK: FaultStack = FaultStack([0; 16384]);

static mut TSS: Tss = Tss { _r0: 0, rsp: [0; 3], _r1: 0, ist: [0; 7], _r2: 0, _r3: 0, iomap_base: 104 };
static mut GDT: [u64; 5] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0, 0];

#[derive(Clone, Copy)]
#[repr(C)]
struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    _zero: u32,
}

#[repr(C, align(16))]
struct Idt([IdtEntry; 256]);
static mut IDT: Idt = Idt([IdtEntry { offset_low: 0, selector: 0, ist: 0, attributes: 0, offset_mid: 0, offset_high: 0, _zero: 0 }; 256]);

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Registers pushed by the stubs below, then the CPU's interrupt frame.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub r15: u64, pub r14: u64, pub r13: u64, pub r12: u64,
    pub r11: u64, pub r10: u64, pub r9: u64, pub r8: u64,
    pub rbp: u64, pub rdi: u64, pub rsi: u64, pub rdx: u64,
    pub rcx: u64, pub rbx: u64, pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// One stub per exception vector: push a 0 error code where the CPU does
// not (all but 8, 10-14, 17, 21, 29, 30), push the vector, go common.
macro_rules! stubs {
    ($($v:literal $err:literal),*) => {
        global_asm!(
            $(
                concat!(".globl exception_stub_", $v),
                concat!("exception_stub_", $v, ":"),
                concat!(".if ", $err, " == 0"),
                "push 0",
                ".endif",
                concat!("push ", $v),
                "jmp exception_common",
            )*
            ".globl exception_stub_table",
            ".pushsection .rodata",
            "exception_stub_table:",
            $( concat!(".quad exception_stub_", $v), )*
            ".popsection",
        );
    };
}
stubs!(0 0, 1 0, 2 0, 3 0, 4 0, 5 0, 6 0, 7 0, 8 1, 9 0, 10 1, 11 1, 12 1, 13 1, 14 1, 15 0,
       16 0, 17 1, 18 0, 19 0, 20 0, 21 1, 22 0, 23 0, 24 0, 25 0, 26 0, 27 0, 28 0, 29 1, 30 1, 31 0);

global_asm!(
    "exception_common:",
    "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
    "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
    "mov rdi, rsp",
    "and rsp, -16",
    "call exception_dispatch",
    "ud2",
    // Event upcalls carry no work for us (the kernel polls the pending
    // bits), but must not fault if interrupts are ever enabled.
    ".globl event_upcall_stub",
    "event_upcall_stub:",
    "iretq",
);

extern "C" {
    static exception_stub_table: [u64; 32];
    fn event_upcall_stub();
}

static FATAL_HOOK: AtomicUsize = AtomicUsize::new(0);
static IN_FAULT: AtomicBool = AtomicBool::new(false);

/// What to do after a fault has been reported (the kernel crashes the
/// domain through Xen). Without a hook the CPU halts.
pub fn set_fatal_hook(hook: fn() -> !) {
    FATAL_HOOK.store(hook as usize, Ordering::Release);
}

pub fn fatal() -> ! {
    match FATAL_HOOK.load(Ordering::Acquire) {
        0 => halt(),
        // SAFETY: only set_fatal_hook stores non-zero values, always `fn() -> !`.
        f => unsafe { core::mem::transmute::<usize, fn() -> !>(f)() },
    }
}

pub fn halt() -> ! {
    loop {
        // SAFETY: stops the CPU; nothing else runs.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow", "#BR bound range",
        "#UD invalid opcode", "#NM device not available", "#DF double fault", "coprocessor overrun",
        "#TS invalid TSS", "#NP segment not present", "#SS stack fault", "#GP general protection",
        "#PF page fault", "reserved", "#MF x87 error", "#AC alignment check", "#MC machine check",
        "#XM SIMD error", "#VE virtualization", "#CP control protection", "reserved", "reserved",
        "reserved", "reserved", "reserved", "reserved", "#HV hypervisor injection",
        "#VC VMM communication", "#SX security", "reserved",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("unknown")
}

#[no_mangle]
extern "C" fn exception_dispatch(frame: &ExceptionFrame) -> ! {
    if IN_FAULT.swap(true, Ordering::AcqRel) {
        // A fault while reporting a fault: do not try to print again.
        fatal();
    }
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    error!(
        "exception: vector {} ({}) error_code={:#x} rip={:#018x} cr2={:#018x} rsp={:#018x}",
        frame.vector, exception_name(frame.vector), frame.error_code, frame.rip, cr2, frame.rsp
    );
    if frame.vector == 14 && (crate::layout::stack_guard()..crate::layout::stack_bottom()).contains(&cr2) {
        error!("exception: the fault address is the stack guard page: kernel stack overflow");
    }
    error!(
        "exception: rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    );
    let (lo, hi) = (crate::layout::stack_bottom(), crate::layout::stack_top());
    if frame.rsp >= lo && frame.rsp % 8 == 0 && frame.rsp + 64 <= hi {
        // SAFETY: [rsp, rsp+64) lies inside the mapped kernel stack.
        let top = unsafe { core::slice::from_raw_parts(frame.rsp as *const u64, 8) };
        error!(
            "exception: stack: {:#x} {:#x} {:#x} {:#x} {:#x} {:#x} {:#x} {:#x}",
            top[0], top[1], top[2], top[3], top[4], top[5], top[6], top[7]
        );
    } else {
        error!("exception: stack: rsp outside the kernel stack, not read");
    }
    fatal();
}

/// Loads our GDT (with a TSS for IST1) and the IDT.
pub fn init() {
    // SAFETY: single CPU, called once at boot before anything relies on
    // the descriptor tables; the statics live for the whole run.
    unsafe {
        let tss = &raw mut TSS;
        (*tss).ist[0] = (&raw const FAULT_STACK as u64) + core::mem::size_of::<FaultStack>() as u64;
        let base = tss as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        let gdt = &raw mut GDT;
        // 64-bit available TSS descriptor (type 9), present.
        (*gdt)[3] = (limit & 0xffff) | ((base & 0xff_ffff) << 16) | (0x89 << 40) | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        (*gdt)[4] = base >> 32;
        let gdtr = DescriptorPointer { limit: (core::mem::size_of::<[u64; 5]>() - 1) as u16, base: gdt as u64 };
        asm!(
            "lgdt [{gdtr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, 0x10",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "mov ss, {tmp:e}",
            "ltr {tss:x}",
            gdtr = in(reg) &gdtr,
            cs = in(reg) u64::from(KERNEL_CS),
            tss = in(reg) TSS_SEL,
            tmp = out(reg) _,
        );

        let idt = &raw mut IDT;
        let table = &raw const exception_stub_table;
        for v in 0..32usize {
            let ist = if matches!(v, 2 | 8 | 14 | 18) { 1 } else { 0 };
            (*idt).0[v] = gate((*table)[v], ist);
        }
        (*idt).0[EVENT_VECTOR as usize] = gate(event_upcall_stub as *const () as u64, 0);
        let idtr = DescriptorPointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: idt as u64 };
        asm!("lidt [{}]", in(reg) &idtr, options(nostack));
    }
}

fn gate(handler: u64, ist: u8) -> IdtEntry {
    IdtEntry {
        offset_low: handler as u16,
        selector: KERNEL_CS,
        ist,
        attributes: 0x8e, // present, DPL 0, 64-bit interrupt gate
        offset_mid: (handler >> 16) as u16,
        offset_high: (handler >> 32) as u32,
        _zero: 0,
    }
}
