from llmsim.cli.main import main

raise SystemExit(main())
