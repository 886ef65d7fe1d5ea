from runwatch.commands.parser import main

raise SystemExit(main())
