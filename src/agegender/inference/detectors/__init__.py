"""Face detectors: the protocol and result type (base), the ported networks (blazeface, mtcnn) and the
factory that builds one by name, `auto` included (factory)."""
