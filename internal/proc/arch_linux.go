package proc

import "syscall"

// HostArch is the machine name as uname -m prints it (x86_64, aarch64):
// the kernel's, not the Go binary's, so a 32-bit cb on a 64-bit kernel
// still builds for the machine.
func HostArch() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return ""
	}
	b := make([]byte, 0, len(u.Machine))
	for _, c := range u.Machine {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}
