/* train_xor.c: trains examples/xor.bp from C, with the library `bpcompile export --to c`
 * writes, then predicts the four cases. Nothing but the C and math libraries at run time.
 *
 *   bpcompile export examples/xor.bp --to c -o build
 *   cc -O2 -Ibuild examples/c/train_xor.c build/xor.o -lm -o build/train_xor
 *   build/train_xor
 */
#include <stdio.h>

#include "xor.h"

int main(void) {
    const double x[4 * 2] = {0, 0, 0, 1, 1, 0, 1, 1};
    const double t[4 * 1] = {0, 1, 1, 0};
    double loss, y[4 * 1];
    xor *net = xor_new();
    if (net == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (int step = 0; step <= 20000; step++) {
        int status = xor_step(net, 4, x, t, &loss);
        if (status != 0) {
            fprintf(stderr, "step %d refused (status %d)\n", step, status);
            xor_free(net);
            return 1;
        }
        if (step % 4000 == 0)
            printf("step %5d  loss %.6f\n", step, loss);
    }
    xor_forward(net, 4, x, y);
    for (int i = 0; i < 4; i++)
        printf("%g xor %g -> %.3f\n", x[2 * i], x[2 * i + 1], y[i]);
    int64_t size;
    const double *w1 = xor_param(net, "W1", &size);
    printf("W1 holds %lld numbers, the first %.4f\n", (long long)size, w1[0]);
    xor_free(net);
    return 0;
}
