// Entry point of qpart_kernels._C. Importing the module runs the static TORCH_LIBRARY_IMPL
// registrations in the other translation units; the module itself exposes nothing.
// pybind11 is deliberately avoided so the extension builds under the Python limited API.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "QPART native kernels (registered as torch.ops.qpart.*)",
      -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
}
