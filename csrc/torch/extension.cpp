// Entry point of qpart_kernels._C. Importing the module runs the static TORCH_LIBRARY_IMPL
// registrations in the other translation units. The module itself exposes only the CPU ISA
// controls of the kernel core (used by qpart_kernels.cpu_isa, tests and benchmarks):
//   _cpu_isa() -> str, _set_cpu_isa(str) -> str (the previous ISA; raises ValueError for an
//   unknown or unsupported name), _cpu_isas() -> tuple[str, ...] (supported, best first).
// pybind11 is deliberately avoided so the extension builds under the Python limited API.
#include <Python.h>

#include "../kernels/qpart_kernels.h"

namespace {

namespace k = ::qpart::kernels;

PyObject* py_cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(k::cpu_isa_name(k::active_cpu_isa()));
}

PyObject* py_set_cpu_isa(PyObject*, PyObject* args) {
  const char* name = nullptr;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  k::CpuIsa isa;
  if (!k::parse_cpu_isa(name, &isa)) {
    PyErr_Format(PyExc_ValueError, "unknown CPU ISA '%s' (expected scalar, avx2, avx512, neon or auto)",
                 name);
    return nullptr;
  }
  const k::CpuIsa previous = k::active_cpu_isa();
  if (!k::set_cpu_isa(isa)) {
    PyErr_Format(PyExc_ValueError, "CPU ISA '%s' is not supported by this CPU or build", name);
    return nullptr;
  }
  return PyUnicode_FromString(k::cpu_isa_name(previous));
}

PyObject* py_cpu_isas(PyObject*, PyObject*) {
  const k::CpuIsa order[] = {k::CpuIsa::kAvx512, k::CpuIsa::kAvx2, k::CpuIsa::kNeon, k::CpuIsa::kScalar};
  PyObject* list = PyList_New(0);
  if (list == nullptr) return nullptr;
  for (k::CpuIsa isa : order) {
    if (!k::cpu_isa_supported(isa)) continue;
    PyObject* s = PyUnicode_FromString(k::cpu_isa_name(isa));
    if (s == nullptr || PyList_Append(list, s) != 0) {
      Py_XDECREF(s);
      Py_DECREF(list);
      return nullptr;
    }
    Py_DECREF(s);
  }
  PyObject* tuple = PyList_AsTuple(list);
  Py_DECREF(list);
  return tuple;
}

PyMethodDef kMethods[] = {
    {"_cpu_isa", py_cpu_isa, METH_NOARGS, "Name of the CPU ISA the kernels use now."},
    {"_set_cpu_isa", py_set_cpu_isa, METH_VARARGS,
     "Forces a CPU ISA (scalar|avx2|avx512|neon|auto); returns the previous one."},
    {"_cpu_isas", py_cpu_isas, METH_NOARGS, "Supported CPU ISAs, best first."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "QPART native kernels (registered as torch.ops.qpart.*)",
      -1, kMethods, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
}
