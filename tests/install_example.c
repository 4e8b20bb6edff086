/* Classifies images with a trained network through the installed library:
 *   cc install_example.c $(pkg-config --cflags --libs ompcnn) && ./a.out w.npz image.png ... */
#include <ompcnn/ompcnn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    char error[512];
    ompcnn_net *net = argc > 2 ? ompcnn_open(argv[1], error, sizeof error) : NULL;
    if (!net) return fprintf(stderr, "%s\n", argc > 2 ? error : "usage: NET.npz IMAGE..."), 2;
    int h, w, c;
    ompcnn_input_shape(net, &h, &w, &c);
    float pixels[h * w * c], probs[ompcnn_classes(net)];
    for (int i = 2; i < argc; i++) {
        if (ompcnn_read_image(argv[i], net, pixels, error, sizeof error))
            return fprintf(stderr, "%s\n", error), ompcnn_close(net), 2;
        int k = ompcnn_classify(net, pixels, probs);
        const char *name = ompcnn_class_name(net, k);
        printf("%s: class %d (%s) p %.4f\n", argv[i], k, name ? name : "-", probs[k]);
    }
    ompcnn_close(net);
    return 0;
}
