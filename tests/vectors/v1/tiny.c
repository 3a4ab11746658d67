/* The program of the committed v1 release's image (tests/vectors/v1): the smallest thing a
 * container can run. It waits for signals forever (pause(2) in a loop; x86_64 Linux syscall
 * 34). Built by `cargo test --test v1_vector -- --ignored regenerate` with
 * gcc -static -nostdlib -Os -s. */
void _start(void) {
    for (;;) {
        __asm__ volatile("mov $34, %%eax\n\tsyscall" ::: "rax", "rcx", "r11", "memory");
    }
}
