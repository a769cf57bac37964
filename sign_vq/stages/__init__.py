"""One module per `sign-vq <stage>` command: its flags (``add_arguments``, or :mod:`sign_vq.arguments` for stages
whose library loads torch) and ``run(args)``, a call into the library."""
