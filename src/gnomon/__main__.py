from gnomon.interface.cli import main

raise SystemExit(main())
