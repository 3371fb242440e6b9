// Entry point of qpart_kernels._C. Importing the module runs the static TORCH_LIBRARY_IMPL
// registrations in the other translation units. The module itself exposes only the CPU ISA
// controls of the kernel core (used by qpart_kernels.cpu_isa, tests and benchmarks):
//   _cpu_isa() -> str, _set_cpu_isa(str) -> str (the previous ISA; raises ValueError for an
//   unknown or unsupported name), _cpu_isas() -> tuple[str, ...] (supported, best first);
// and _output_pool_free_bytes() / _output_pool_cap_bytes() -> int (output_pool.h).
// The ISAs are the rows of the kernel core's ISA table (csrc/kernels/isa_table.h), iterated
// here: nothing in this file names one.
// pybind11 is deliberately avoided so the extension builds under the Python limited API.
#include <Python.h>

#include <string>

#include "../kernels/isa_table.h"
#include "../kernels/qpart_kernels.h"
#include "output_pool.h"

namespace {

namespace k = ::qpart::kernels;

// "avx512, avx2, neon, scalar or auto": every name _set_cpu_isa accepts.
std::string accepted_names() {
  std::string out;
  for (const k::detail::IsaKernels& row : k::detail::isa_table()) (out += row.name) += ", ";
  if (!out.empty()) out.resize(out.size() - 2);
  return out + " or auto";
}

PyObject* py_cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(k::cpu_isa_name(k::active_cpu_isa()));
}

PyObject* py_set_cpu_isa(PyObject*, PyObject* args) {
  const char* name = nullptr;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  k::CpuIsa isa;
  if (!k::parse_cpu_isa(name, &isa)) {
    PyErr_Format(PyExc_ValueError, "unknown CPU ISA '%s' (expected %s)", name,
                 accepted_names().c_str());
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
  PyObject* list = PyList_New(0);
  if (list == nullptr) return nullptr;
  for (const k::detail::IsaKernels& row : k::detail::isa_table()) {  // best first
    if (!k::cpu_isa_supported(row.isa)) continue;
    PyObject* s = PyUnicode_FromString(row.name);
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

PyObject* py_output_pool_free_bytes(PyObject*, PyObject*) {
  return PyLong_FromSize_t(::qpart::glue::output_pool_free_bytes());
}

PyObject* py_output_pool_cap_bytes(PyObject*, PyObject*) {
  return PyLong_FromSize_t(::qpart::glue::output_pool_cap_bytes());
}

PyMethodDef kMethods[] = {
    {"_cpu_isa", py_cpu_isa, METH_NOARGS, "Name of the CPU ISA the kernels use now."},
    {"_set_cpu_isa", py_set_cpu_isa, METH_VARARGS,
     "Forces a CPU ISA (a name from _cpu_isas() or auto); returns the previous one."},
    {"_cpu_isas", py_cpu_isas, METH_NOARGS, "Supported CPU ISAs, best first."},
    {"_output_pool_free_bytes", py_output_pool_free_bytes, METH_NOARGS,
     "Free bytes the CPU ops' output pool holds."},
    {"_output_pool_cap_bytes", py_output_pool_cap_bytes, METH_NOARGS,
     "The most free bytes the CPU ops' output pool keeps."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static const char doc[] = "QPART native kernels (registered as torch.ops.qpart.*)";
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", doc, -1, kMethods, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
}
