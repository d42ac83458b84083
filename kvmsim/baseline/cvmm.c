/* cvmm.c: the smallest VMM that runs a kvmsim bench loop on /dev/kvm, for `kvmsim bench`.
 *
 * Not a kernel model: the C baseline the simulator's round trips are compared with.  The guest's
 * whole boot state comes from a file written by kvmsim/baseline/state.py (RAM slots, then
 * struct kvm_regs and struct kvm_sregs as KVM_GET_REGS/KVM_GET_SREGS returned them on a VM
 * kvmsim set up), so this program only does what a VMM's run loop does:
 *
 *   KVM_CREATE_VM, memory, KVM_CREATE_VCPU, KVM_SET_CPUID2 (supported), KVM_SET_SREGS/REGS,
 *   then KVM_RUN until the guest writes the debug-exit port:
 *     KVM_EXIT_IO   port 0x80 (pio_loop.S): nothing to do
 *     KVM_EXIT_MMIO read (mmio_loop.S):      answer 0x1234, as the bench's regbank device does
 *
 * Usage: cvmm STATE_FILE EXIT_PORT
 * Prints one line: "<round trips> <seconds of the KVM_RUN loop>" (CLOCK_MONOTONIC).
 * Exit status 0 on the exit port, 1 with a message on stderr for anything else.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLOTS 8
#define MAX_CPUID 256

static int die(const char *what)
{
	fprintf(stderr, "cvmm: %s: %s\n", what, strerror(errno));
	return 1;
}

static int read_all(FILE *f, void *buf, size_t n)
{
	return fread(buf, 1, n, f) == n ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: cvmm STATE_FILE EXIT_PORT\n");
		return 2;
	}
	unsigned exit_port = (unsigned)strtoul(argv[2], NULL, 0);
	FILE *f = fopen(argv[1], "rb");
	if (!f)
		return die("open state file");
	char magic[8];
	uint32_t nslots, pad;
	if (read_all(f, magic, 8) || memcmp(magic, "KVMSIMB1", 8) || read_all(f, &nslots, 4) ||
	    read_all(f, &pad, 4) || nslots > MAX_SLOTS) {
		fprintf(stderr, "cvmm: %s: not a kvmsim bench state file\n", argv[1]);
		return 2;
	}
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return die("KVM_CREATE_VM");
	for (uint32_t i = 0; i < nslots; i++) {
		uint64_t gpa, size;
		if (read_all(f, &gpa, 8) || read_all(f, &size, 8))
			return die("state file slot header");
		void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED)
			return die("mmap guest RAM");
		if (read_all(f, mem, size))
			return die("state file RAM");
		struct kvm_userspace_memory_region r = {
			.slot = i, .guest_phys_addr = gpa, .memory_size = size,
			.userspace_addr = (uint64_t)(uintptr_t)mem,
		};
		if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			return die("KVM_SET_USER_MEMORY_REGION");
	}
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	if (read_all(f, &regs, sizeof(regs)) || read_all(f, &sregs, sizeof(sregs)))
		return die("state file registers");
	fclose(f);

	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return die("KVM_CREATE_VCPU");
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + MAX_CPUID * sizeof(struct kvm_cpuid_entry2));
	cpuid->nent = MAX_CPUID;
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0)
		return die("KVM_GET_SUPPORTED_CPUID");
	if (ioctl(vcpu, KVM_SET_CPUID2, cpuid) < 0)   /* without it KVM refuses EFER.LME */
		return die("KVM_SET_CPUID2");
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return die("KVM_SET_SREGS");
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return die("KVM_SET_REGS");
	int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < 0)
		return die("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return die("mmap kvm_run");

	unsigned long n = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return die("KVM_RUN");
		}
		if (run->exit_reason == KVM_EXIT_IO) {
			if (run->io.port == exit_port)
				break;
			n++;
		} else if (run->exit_reason == KVM_EXIT_MMIO) {
			if (!run->mmio.is_write) {
				uint64_t v = 0x1234;
				memcpy(run->mmio.data, &v, run->mmio.len);
			}
			n++;
		} else {
			fprintf(stderr, "cvmm: unexpected exit reason %u after %lu round trips\n",
				run->exit_reason, n);
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%lu %.9f\n", n, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}
